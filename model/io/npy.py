"""NumPy ``.npy`` movies, memory-mapped."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from model.io.base import MovieReader, copy_and_release
from model.io.errors import MovieFormatError


class NpyMovie(MovieReader):
    """A ``(T, H, W)`` array saved with :func:`numpy.save`, read through a memory map.

    Whole frames (one byte range of a C-ordered file) are read with positional reads into the
    returned array instead: no page of the mapping is touched, and threads read at once
    without sharing the mapping's page tables.
    """

    def __init__(self, path: Path, *, fps: float | None = None,
                 handle: BinaryIO | None = None) -> None:  # fmt: skip
        self._handle = handle
        try:
            if handle is not None:
                array = _HandleArray(path, handle)
            else:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            text = str(exc)
            if "pickle" in text.lower() or "object" in text.lower():
                reason = "it stores Python objects instead of pixel values"
            elif "mmap length" in text or "larger than" in text:
                reason = "the file is shorter than its header says (truncated upload?)"
            else:
                reason = f"the header is not valid ({text})"
            raise MovieFormatError(f"{path.name!r} is not a usable .npy movie: {reason}") from exc
        except (OSError, EOFError) as exc:
            raise MovieFormatError(f"{path.name!r} is not a usable .npy movie: {exc}") from exc
        if not isinstance(array, np.ndarray | _HandleArray):
            raise MovieFormatError(f"{path.name!r} holds several arrays; save one (T, H, W) array")
        self._array = array
        shape = tuple(int(n) for n in array.shape)
        if len(shape) == 2:
            raise MovieFormatError(
                f"{path.name!r} is a single {shape[0]}x{shape[1]} image, not a movie; "
                "save a (frames, height, width) array"
            )
        if len(shape) != 3:
            raise MovieFormatError(
                f"{path.name!r} has {len(shape)} dimensions {shape}; caimx expects a "
                "(frames, height, width) array"
            )
        super().__init__(path, shape=shape, dtype=array.dtype, fps=fps)  # type: ignore[arg-type]
        self._fd: int | None = None
        if isinstance(array, np.memmap):
            self.concurrent_reads = True
            if array.flags.c_contiguous:
                self._fd = os.open(path, os.O_RDONLY)

    def _read(self, t0: int, t1: int, y: slice, x: slice) -> np.ndarray:
        if not isinstance(self._array, np.memmap):
            return self._array[t0:t1, y, x]
        _, height, width = self.shape
        if self._fd is not None and y.indices(height) == (0, height, 1) \
                and x.indices(width) == (0, width, 1):
            return self._read_frames(t0, t1)
        return copy_and_release(self._array, self._array[t0:t1, y, x])

    def _read_frames(self, t0: int, t1: int) -> np.ndarray:
        out = np.empty((t1 - t0, *self.shape[1:]), self._array.dtype)
        raw = out.reshape(-1).view(np.uint8)
        offset = self._array.offset + t0 * (raw.size // (t1 - t0))
        done = 0
        while done < raw.size:
            got = os.preadv(self._fd, [raw[done:]], offset + done)
            if not got:
                raise MovieFormatError(f"{self.path.name!r} ended before frame {t1 - 1}: the file "
                                       "is truncated (incomplete copy or upload?)")
            done += got
        return out

    def close(self) -> None:
        mm = getattr(self._array, "_mmap", None)
        self._array = None  # type: ignore[assignment]
        if mm is not None:
            mm.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._handle is not None:
            self._handle.close()


class _HandleArray:
    """A C-ordered ``.npy`` array in an open file (fsspec), read by byte ranges of frames."""

    def __init__(self, path: Path, handle: BinaryIO) -> None:
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)  # fmt: skip
        shape, fortran, dtype = read_header(handle)
        if dtype.hasobject:
            raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
        if fortran and len(shape) > 1:
            raise MovieFormatError(f"{path.name!r} is stored in Fortran order; save it with "
                                   "numpy.save from a C-ordered array to read it remotely")
        self._handle, self._offset = handle, handle.tell()
        self.shape, self.dtype = tuple(shape), dtype
        self._frame = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        handle.seek(0, 2)
        if handle.tell() < self._offset + self._frame * (shape[0] if shape else 1):
            raise ValueError("mmap length is greater than file size")

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        frames, y, x = key
        t0, t1, _ = frames.indices(self.shape[0])
        self._handle.seek(self._offset + t0 * self._frame)
        data = self._handle.read((t1 - t0) * self._frame)
        block = np.frombuffer(data, dtype=self.dtype).reshape(t1 - t0, *self.shape[1:])
        return block[:, y, x]
