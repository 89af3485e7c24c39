"""model.io readers on files written by tifffile, numpy and zarr."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from model.io import MovieFormatError, UnsupportedFormatError, open_movie
from model.io.npy import NpyMovie
from model.io.tiff import TiffMovie


@pytest.fixture
def frames() -> np.ndarray:
    return np.arange(12 * 10 * 14, dtype=np.uint16).reshape(12, 10, 14)


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda p, a: tifffile.imwrite(p, a), id="plain"),
        pytest.param(lambda p, a: tifffile.imwrite(p, a, bigtiff=True), id="bigtiff"),
        pytest.param(lambda p, a: tifffile.imwrite(p, a, compression="zlib"), id="zlib"),
        pytest.param(lambda p, a: tifffile.imwrite(p, a, byteorder=">"), id="big-endian"),
        pytest.param(
            lambda p, a: tifffile.imwrite(p, a, imagej=True, metadata={"axes": "TYX"}), id="imagej"
        ),
    ],
)
def test_tiff_reads_the_frames_it_was_given(tmp_path: Path, frames: np.ndarray, write) -> None:
    path = tmp_path / "movie.tif"
    write(path, frames)
    with open_movie(path) as movie:
        assert isinstance(movie, TiffMovie)
        assert movie.shape == (12, 10, 14)
        assert movie.dtype == np.uint16
        got = movie.read(3, 7, y=slice(2, 8), x=slice(1, None))
        np.testing.assert_array_equal(got, frames[3:7, 2:8, 1:])
        assert got.dtype.isnative and not isinstance(got, np.memmap)
        np.testing.assert_array_equal(movie.read(11, 12), frames[11:12])


def test_imagej_frame_interval_gives_fps(tmp_path: Path, frames: np.ndarray) -> None:
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, frames, imagej=True, metadata={"axes": "TYX", "finterval": 1 / 30})
    with open_movie(path) as movie:
        assert movie.fps == pytest.approx(30.0)


def test_npy_is_memory_mapped(tmp_path: Path, frames: np.ndarray) -> None:
    path = tmp_path / "movie.npy"
    np.save(path, frames.astype(np.float32))
    with open_movie(path, fps=15.0) as movie:
        assert isinstance(movie, NpyMovie)
        assert isinstance(movie._array, np.memmap)
        assert (movie.shape, movie.dtype, movie.fps) == ((12, 10, 14), np.float32, 15.0)
        np.testing.assert_array_equal(movie.read(0, 2, x=slice(0, 3)), frames[:2, :, :3])


def test_zarr_array_and_group(tmp_path: Path, frames: np.ndarray) -> None:
    array = zarr.create_array(tmp_path / "a.zarr", shape=frames.shape, dtype=frames.dtype,
                              chunks=(4, 10, 14))  # fmt: skip
    array[:] = frames
    array.attrs["fps"] = 20
    with open_movie(tmp_path / "a.zarr") as movie:
        assert movie.shape == frames.shape and movie.fps == 20.0
        np.testing.assert_array_equal(movie.read(5, 9), frames[5:9])
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("movie", shape=frames.shape, dtype=frames.dtype)[:] = frames
    group.create_array("mean", shape=(10, 14), dtype="f4")
    with open_movie(tmp_path / "g.zarr") as movie:
        np.testing.assert_array_equal(movie.read(0, 12), frames)


def test_read_outside_the_movie_is_an_index_error(tmp_path: Path, frames: np.ndarray) -> None:
    np.save(tmp_path / "m.npy", frames)
    with open_movie(tmp_path / "m.npy") as movie:
        with pytest.raises(IndexError):
            movie.read(10, 13)
        assert movie.read(4, 4).shape == (0, 10, 14)


def _single_image(path: Path) -> None:
    tifffile.imwrite(path, np.zeros((32, 32), np.uint16))


def _rgb(path: Path) -> None:
    tifffile.imwrite(path, np.zeros((4, 16, 16, 3), np.uint8), photometric="rgb")


def _two_channels(path: Path) -> None:
    tifffile.imwrite(path, np.zeros((5, 2, 16, 16), np.uint16), imagej=True,
                     metadata={"axes": "TCYX"})  # fmt: skip


def _one_frame(path: Path) -> None:
    np.save(path, np.zeros((1, 16, 16), np.uint16))


def _npy_2d(path: Path) -> None:
    np.save(path, np.zeros((16, 16), np.uint16))


def _npy_objects(path: Path) -> None:
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


def _npy_truncated(path: Path) -> None:
    np.save(path, np.zeros((20, 16, 16), np.uint16))
    path.write_bytes(path.read_bytes()[:500])


def _npy_complex(path: Path) -> None:
    np.save(path, np.zeros((4, 8, 8), np.complex64))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _tiff_garbage(path: Path) -> None:
    path.write_bytes(b"II*\x00" + b"\xff" * 64)


def _tiff_header_only(path: Path) -> None:
    path.write_bytes(b"II*\x00")  # no offset of a first page


@pytest.mark.parametrize(
    ("name", "write", "words"),
    [
        ("frame.tif", _single_image, "single 32x32 image, not a movie"),
        ("rgb.tif", _rgb, "colour"),
        ("stack.tif", _two_channels, "4 dimensions"),
        ("one.npy", _one_frame, "only 1 frame"),
        ("flat.npy", _npy_2d, "single 16x16 image"),
        ("objects.npy", _npy_objects, "Python objects"),
        ("cut.npy", _npy_truncated, "truncated"),
        ("complex.npy", _npy_complex, "complex64"),
        ("empty.tif", _empty, "empty (0 bytes)"),
        ("broken.tif", _tiff_garbage, "damaged"),
        ("cut.tif", _tiff_header_only, "truncated"),
    ],
)
def test_unusable_files_get_a_plain_reason(tmp_path: Path, name: str, write, words: str) -> None:
    path = tmp_path / name
    write(path)
    with pytest.raises(MovieFormatError, match=re.escape(words)) as info:
        open_movie(path)
    assert name in str(info.value)


def test_other_formats_are_named(tmp_path: Path) -> None:
    png = tmp_path / "cells.tif"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(UnsupportedFormatError, match="looks like a PNG image"):
        open_movie(png)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UnsupportedFormatError, match="multi-page TIFF"):
        open_movie(text)
    with pytest.raises(MovieFormatError, match="does not exist"):
        open_movie(tmp_path / "missing.tif")
    assert issubclass(MovieFormatError, ValueError)


def test_readers_never_import_tensorflow() -> None:
    code = (
        "import sys, model.io, model.io.tiff, model.io.npy, model.io.zarr_movie;"
        "assert not {'tensorflow', 'keras'} & set(sys.modules), 'TensorFlow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("suffix", "rows"), [(".tif", slice(None)), (".npy", slice(None)),
                                             (".tif", slice(8, 500)), (".npy", slice(8, 500))])
def test_reading_a_mapped_movie_block_by_block_keeps_memory_flat(tmp_path, suffix,
                                                                 rows) -> None:
    """Pages of a memory-mapped file are dropped after each read (whole frames of a .npy are not
    mapped at all): reading a whole movie of 96 MB window by window must not leave it in the
    process's resident set."""
    import psutil

    frames = np.random.default_rng(0).integers(0, 4000, (48, 512, 512), dtype=np.uint16)
    path = tmp_path / f"movie{suffix}"  # 192 frames, 96 MB, written in four parts
    if suffix == ".npy":
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(192, 512, 512))
        for i in range(4):
            out[i * 48:(i + 1) * 48] = frames
        out.flush()
        del out
    else:
        tifffile.imwrite(path, (frames for _ in range(4)), shape=(192, 512, 512),
                         dtype=np.uint16, metadata={"axes": "TYX"})
    del frames
    process = psutil.Process()
    with open_movie(path) as movie:
        assert getattr(movie, "_memmap", None) is not None or suffix == ".npy"
        before = process.memory_info().rss
        total = 0
        for t0 in range(0, 192, 16):
            block = movie.read(t0, t0 + 16, y=rows)
            total += int(block[:, ::64, ::64].sum())
        grown = process.memory_info().rss - before
    assert total > 0
    assert grown < 40 * 2**20, f"RSS grew {grown / 2**20:.0f} MB reading a 96 MB movie"


@pytest.mark.parametrize("name", ["z.tif", "flat.tif", "m.npy", "m.zarr", "m.h5"])
def test_reads_from_many_threads_match_reads_in_turn(tmp_path, name):
    """The engine reads ahead in threads: a movie read from 8 threads at once gives the frames
    that reads in turn give (z.tif compressed, so it is read through its file handle in turns;
    flat.tif and the .npy memory-mapped or read by position, at once), also cropped."""
    from concurrent.futures import ThreadPoolExecutor

    import h5py

    movie = np.random.default_rng(0).integers(0, 4000, (64, 24, 20), dtype=np.uint16)
    path = tmp_path / name
    if name.endswith(".tif"):
        tifffile.imwrite(path, movie, compression="zlib" if name == "z.tif" else None)
    elif name.endswith(".npy"):
        np.save(path, movie)
    elif name.endswith(".zarr"):
        zarr.create_array(str(path), data=movie, chunks=(8, 24, 20))
    else:
        with h5py.File(path, "w") as fh:
            fh.create_dataset("data", data=movie, chunks=(4, 24, 20), compression="gzip")
    ranges = [(t, min(t + 7, 64), rows) for t in range(0, 64, 3)
              for rows in (slice(None), slice(3, 17))] * 4
    with open_movie(path) as reader, ThreadPoolExecutor(8) as pool:
        assert reader.concurrent_reads == (name in ("flat.tif", "m.npy"))
        blocks = list(pool.map(lambda r: reader.read(r[0], r[1], y=r[2]), ranges))
    for (t0, t1, rows), block in zip(ranges, blocks, strict=True):
        np.testing.assert_array_equal(block, movie[t0:t1, rows])
