"""The movie adapter's digest: the input's SHA-256, read alongside the engine's work."""

import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from processes import child_pids, is_alive

from model.inference.digest import BLOCK_BYTES, MovieDigest, movie_sha256
from model.inference.source import ArrayMovie
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


class _CountingMovie(ArrayMovie):
    """Counts its reads."""

    def __init__(self, data):
        super().__init__(data)
        self.reads = 0

    def read(self, t0, t1, **kw):
        self.reads += 1
        return super().read(t0, t1, **kw)


def test_a_digest_left_to_start_reads_nothing_until_started_or_asked():
    data = np.arange(640 * 16, dtype=np.float32).reshape(640, 4, 4)
    expected = hashlib.sha256(data.tobytes()).hexdigest()
    movie = _CountingMovie(data)
    digest = MovieDigest(movie, start=False)
    time.sleep(0.2)
    assert movie.reads == 0 and digest.finished_at is None
    digest.start()
    digest.start()  # once
    assert digest.result() == expected and movie.reads == 10
    assert MovieDigest(_CountingMovie(data), start=False).result() == expected  # asked: read
    movie = _CountingMovie(data)
    never = MovieDigest(movie, start=False)
    never.cancel()  # the engine failed before its first batch
    never.start()
    with pytest.raises(RuntimeError, match="cancelled"):
        never.result()
    assert movie.reads == 0


def _zeros_file(path, size: int = 64 << 30):
    """A sparse file of ``size`` zero bytes: seconds to hash, no disk used."""
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


class _FileMovie(ArrayMovie):
    """A movie read from ``path`` (the digest reads the file, never these pixels)."""

    def __init__(self, path):
        super().__init__(np.zeros((1, 1, 1), np.uint16))
        self.path = path


def _hashing(parent: int) -> list[int]:
    """The hashing processes that ``parent`` started (its other children are not counted)."""
    found = []
    for pid in child_pids(parent):
        try:
            if b"hashlib.sha256()" in (Path("/proc") / str(pid) / "cmdline").read_bytes():
                found.append(pid)
        except OSError:  # ended meanwhile
            continue
    return found


def _wait(condition, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        time.sleep(0.05)
    return condition()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_file_is_hashed_in_a_process_of_its_own_that_a_cancel_ends(tmp_path):
    digest = MovieDigest(_FileMovie(_zeros_file(tmp_path / "zeros.raw")))
    assert _wait(lambda: _hashing(os.getpid())), "no hashing process started"
    hashing = _hashing(os.getpid())
    digest.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        digest.result()
    assert digest.finished_at is not None
    assert _wait(lambda: not any(is_alive(pid) for pid in hashing), timeout=5)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_the_hashing_process_ends_with_the_engine_that_started_it(tmp_path):
    path = _zeros_file(tmp_path / "zeros.raw")
    script = ("import sys, time\n"
              "from model.inference.digest import MovieDigest\n"
              "from model.inference.source import ArrayMovie\n"
              "import numpy as np\n"
              "movie = ArrayMovie(np.zeros((1, 1, 1)))\n"
              "movie.path = sys.argv[1]\n"
              "digest = MovieDigest(movie)\n"
              "time.sleep(600)\n")
    engine = subprocess.Popen([sys.executable, "-c", script, str(path)])
    try:
        assert _wait(lambda: _hashing(engine.pid)), "no hashing process started"
        hashing = _hashing(engine.pid)
    finally:
        engine.kill()
        engine.wait()
    assert _wait(lambda: not any(is_alive(pid) for pid in hashing), timeout=10)


def test_a_file_is_hashed_here_when_no_process_can_be_started(tmp_path, monkeypatch, caplog):
    path = tmp_path / "movie.raw"
    path.write_bytes(np.random.default_rng(0).bytes(3 * BLOCK_BYTES // 2))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    with caplog.at_level(logging.WARNING, logger="model.inference.digest"):
        value = MovieDigest(_FileMovie(path)).result()
    assert value == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "hashing it in this one" in caplog.text
