"""Movies read through fsspec URLs, lazily: from a local S3-compatible server (moto) and from a
plain HTTP server with Range support that counts the bytes it sends."""

from __future__ import annotations

import http.server
import io
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from scanimage_files import fastz_movie, fastz_settings, write_scanimage

from model.io import MovieFormatError, open_movie
from model.io.remote import RemoteSourceError, remote_info

BUCKET = "caimx-test-rigs"


@pytest.fixture
def s3(s3_server: str, s3_put):
    """(storage options, put(key, bytes)) for the session's S3 server."""
    return {"endpoint_url": s3_server}, s3_put


def frames(t: int = 30, h: int = 20, w: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, (t, h, w)).astype(np.uint16)


def check(url: str, expected: np.ndarray, storage: dict, **options) -> None:
    with open_movie(url, storage_options=storage, **options) as movie:
        assert movie.shape == expected.shape and movie.dtype == expected.dtype
        assert movie.path.name == url.rsplit("/", 1)[-1] and movie.url == url
        np.testing.assert_array_equal(movie.read(0, len(expected)), expected)
        np.testing.assert_array_equal(movie.read(5, 9, y=slice(2, 11), x=slice(3, None)),
                                      expected[5:9, 2:11, 3:])  # fmt: skip


def test_tiff_hdf5_npy_and_zarr_from_s3(s3, tmp_path: Path) -> None:
    storage, put = s3
    movie = frames()
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, movie, imagej=True, metadata={"axes": "TYX", "fps": 15})
    url = put("rigs/a/movie.tif", buffer.getvalue())
    check(url, movie, storage)
    with open_movie(url, storage_options=storage) as reader:
        assert reader.fps == 15.0

    volumes = fastz_movie([movie, movie + 7, movie + 9])  # ScanImage fast-z, one page at a time
    write_scanimage(tmp_path / "fastz.tif", volumes, fastz_settings(planes=3, flyback=1))
    url = put("rigs/a/fastz_00001.tif", (tmp_path / "fastz.tif").read_bytes())
    check(url, movie + 7, storage, plane=1)

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("imaging/mov", data=movie, chunks=(5, 20, 28))
        f["imaging/mov"].attrs["fps"] = 9.0
    check(put("rigs/a/session.h5", buffer.getvalue()), movie, storage, dataset="imaging/mov")

    buffer = io.BytesIO()
    np.save(buffer, movie)
    check(put("rigs/a/movie.npy", buffer.getvalue()), movie, storage)

    store = tmp_path / "movie.zarr"
    array = zarr.create_array(store, shape=movie.shape, dtype=movie.dtype, chunks=(10, 20, 28))
    array[:] = movie
    for path in store.rglob("*"):
        if path.is_file():
            put(f"rigs/a/movie.zarr/{path.relative_to(store).as_posix()}", path.read_bytes())
    url = f"s3://{BUCKET}/rigs/a/movie.zarr"
    assert remote_info(url, storage_options=storage) == {"size": 0, "kind": "zarr"}
    check(url, movie, storage)


def test_missing_objects_and_folders(s3) -> None:
    storage, put = s3
    with pytest.raises(RemoteSourceError, match="there is no") as missing:
        remote_info(f"s3://{BUCKET}/rigs/none.tif", storage_options=storage)
    assert missing.value.reason == "missing"
    put("rigs/series/rec_1.tif", b"II*\x00")
    with pytest.raises(MovieFormatError, match="is a folder"):
        remote_info(f"s3://{BUCKET}/rigs/series", storage_options=storage)
    with pytest.raises(MovieFormatError, match="not a movie caimx can read from a URL"):
        open_movie(put("rigs/notes.txt", b"frame 1, frame 2"), storage_options=storage)


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder with HTTP Range support (206) and counts the body bytes sent."""

    sent: ClassVar[list[int]] = []

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        found = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, stop = (0, size - 1) if not found else (
            int(found.group(1)), min(int(found.group(2) or size - 1), size - 1))  # fmt: skip
        handle = open(path, "rb")  # noqa: SIM115 - closed by copyfile's caller
        handle.seek(start)
        self.send_response(206 if found else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(stop - start + 1))
        if found:
            self.send_header("Content-Range", f"bytes {start}-{stop}/{size}")
        self.end_headers()
        self._left = stop - start + 1
        return handle

    def copyfile(self, source, outputfile) -> None:
        data = source.read(self._left)
        self.sent.append(len(data))
        outputfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[str, Path, list[int]]]:
    folder = tmp_path / "www"
    folder.mkdir()
    _RangeHandler.sent = []
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(folder), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder, _RangeHandler.sent
    server.shutdown()
    server.server_close()


def test_a_big_tiff_over_http_is_read_by_ranges(http_folder) -> None:
    """A 48 MB TIFF: opening it and reading 3 frames moves a few MiB, not the file."""
    base, folder, sent = http_folder
    movie = np.random.default_rng(3).integers(0, 60000, (96, 512, 512)).astype(np.uint16)
    tifffile.imwrite(folder / "big.tif", movie, imagej=True, metadata={"axes": "TYX", "fps": 30})
    size = (folder / "big.tif").stat().st_size
    with open_movie(f"{base}/big.tif") as reader:
        assert reader.shape == (96, 512, 512) and reader.fps == 30.0
        np.testing.assert_array_equal(reader.read(50, 53), movie[50:53])
    assert sum(sent) < size / 4, (sum(sent), size)
