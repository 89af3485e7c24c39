"""The reader interface shared by every movie format."""

from __future__ import annotations

import mmap
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType

import numpy as np
from numpy.lib.array_utils import byte_bounds

from model.io.errors import MovieFormatError

SUPPORTED_KINDS = frozenset("uif")  # unsigned, signed integers and floats


class MovieReader(ABC):
    """A movie on disk, read lazily as ``(T, H, W)`` frames.

    Attributes
    ----------
    path : Path
        The file (or Zarr directory) the frames come from.
    shape : tuple of int
        ``(T, H, W)``: frames, rows, columns.
    dtype : numpy.dtype
        Pixel type as stored (native byte order when read).
    fps : float or None
        Frames per second when the file records it.
    planes, channels : int
        How many z-planes and channels the file holds (1 for most formats); one of each is read.
    plane, channel : int
        Which ones are read (from 0).
    url : str or None
        The fsspec URL the movie is read from (:func:`model.io.remote.open_url`); None for a
        local file, whose ``path`` then exists.
    """

    planes: int = 1
    plane: int = 0
    channels: int = 1
    channel: int = 0
    #: Whether several threads may read at once (memory-mapped or positional reads); readers
    #: that seek a shared file handle, then read, take turns.
    concurrent_reads: bool = False
    url: str | None = None

    def __init__(
        self, path: Path, *, shape: tuple[int, int, int], dtype: np.dtype, fps: float | None
    ) -> None:
        self.path = path
        self.shape = shape
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.fps = fps
        self._read_lock = threading.Lock()  # file handles seek then read: one read at a time
        _check_shape_and_dtype(path, shape, self.dtype)

    @property
    def layout(self) -> dict[str, int]:
        """``planes``, ``plane``, ``channels``, ``channel``: what the file holds, what is read."""
        return {"planes": self.planes, "plane": self.plane, "channels": self.channels,
                "channel": self.channel}  # fmt: skip

    @property
    def n_frames(self) -> int:
        return self.shape[0]

    def __len__(self) -> int:
        return self.shape[0]

    def read(
        self, t0: int, t1: int, *, y: slice = slice(None), x: slice = slice(None)
    ) -> np.ndarray:
        """Frames ``t0`` (inclusive) to ``t1`` (exclusive), cropped to rows ``y`` and columns ``x``.

        Safe to call from several threads (the engine reads ahead in threads): at once where
        :attr:`concurrent_reads`, else in turns.

        Returns
        -------
        numpy.ndarray
            ``(t1 - t0, h, w)`` array in the movie's dtype, native byte order, owned by the caller.
        """
        n = self.shape[0]
        if not (0 <= t0 <= t1 <= n):
            raise IndexError(f"frames [{t0}, {t1}) are outside the movie's 0..{n} frames")
        if t0 == t1:
            h = len(range(*y.indices(self.shape[1])))
            w = len(range(*x.indices(self.shape[2])))
            return np.empty((0, h, w), dtype=self.dtype)
        if self.concurrent_reads:
            frames = self._read(t0, t1, y, x)
        else:
            with self._read_lock:
                frames = self._read(t0, t1, y, x)
        return np.ascontiguousarray(frames, dtype=self.dtype)

    @abstractmethod
    def _read(self, t0: int, t1: int, y: slice, x: slice) -> np.ndarray:
        """Format-specific read of a non-empty frame range."""

    def close(self) -> None:  # noqa: B027 - readers without a handle have nothing to release
        """Release the file; further reads are not allowed."""

    def __enter__(self) -> MovieReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        t, h, w = self.shape
        return f"<{type(self).__name__} {self.path.name!r} {t}x{h}x{w} {self.dtype}>"


def _check_shape_and_dtype(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    name = path.name
    if dtype.kind not in SUPPORTED_KINDS:
        raise MovieFormatError(
            f"{name!r} stores {dtype} pixels; caimx reads grayscale movies with integer or "
            "floating-point pixels"
        )
    if len(shape) != 3:
        raise MovieFormatError(f"{name!r} has shape {shape}; a movie is (frames, height, width)")
    t, h, w = shape
    if h == 0 or w == 0:
        raise MovieFormatError(f"{name!r} has empty frames ({h}x{w} pixels)")
    if t == 0:
        raise MovieFormatError(f"{name!r} contains no frames")


def copy_and_release(mapped: np.ndarray, block: np.ndarray) -> np.ndarray:
    """``block`` (a view into the memory-mapped array ``mapped``) copied out, then the mapping's
    pages dropped from this process.

    Read-only file mappings are cheap, but every page touched stays in the process's resident set
    until the mapping closes: reading a 10 GB movie window by window would show 10 GB of RSS (file
    pages the kernel may reclaim, but that RSS limits and monitoring count). ``MADV_DONTNEED`` drops
    the pages this read touched (not the whole mapping, which other threads may be reading);
    the file stays in the page cache for the next reader.
    """
    out = np.array(block, copy=True)
    handle = getattr(mapped, "_mmap", None)
    if handle is not None and hasattr(mmap, "MADV_DONTNEED") and block.size:
        start = np.frombuffer(handle, np.uint8).__array_interface__["data"][0]
        lo, hi = byte_bounds(block)
        page = mmap.PAGESIZE
        first = (lo - start) // page * page
        stop = min(-(-(hi - start) // page) * page, len(handle))
        handle.madvise(mmap.MADV_DONTNEED, first, stop - first)
    return out
