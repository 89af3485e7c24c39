"""The movie adapter's digest: the input's SHA-256, read alongside the engine's work."""

import hashlib
import threading

import numpy as np
import pytest

from model.inference.source import ArrayMovie, MovieDigest, movie_sha256
from model.io import open_movie


def test_the_digest_of_a_file_is_its_bytes_and_of_an_array_its_pixels(tmp_path):
    data = np.arange(40 * 6 * 5, dtype=np.uint16).reshape(40, 6, 5)
    path = tmp_path / "movie.npy"
    np.save(path, data)
    with open_movie(path) as movie:
        assert MovieDigest(movie).result() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert MovieDigest(ArrayMovie(data)).result() == hashlib.sha256(data.tobytes()).hexdigest()


class _SlowMovie(ArrayMovie):
    """Blocks every read until released: a digest caught mid-movie."""

    def __init__(self, data):
        super().__init__(data)
        self.release = threading.Event()

    def read(self, t0, t1, **kw):
        self.release.wait(5)
        return super().read(t0, t1, **kw)


def test_a_cancelled_digest_stops_reading_and_says_so():
    movie = _SlowMovie(np.zeros((640, 4, 4), np.float32))
    digest = MovieDigest(movie)
    digest.cancel()
    movie.release.set()
    with pytest.raises(RuntimeError, match="cancelled"):
        digest.result()
    stop = threading.Event()
    stop.set()
    assert movie_sha256(movie, stop=stop) == hashlib.sha256().hexdigest()  # nothing read
