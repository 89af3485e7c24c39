"""One way to read blocks of a movie, whether it is a ``model.io`` reader or an in-memory array."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

#: Bytes of movie read at once by the passes that stream every frame (binning, fluorescence).
#: Blocks under glibc's 32 MB allocation threshold reuse freed heap memory instead of faulting
#: in fresh pages each time: 16 MB blocks bin 512 x 512 uint16 frames 2-3x faster than 128 MB
#: ones, and the fluorescence pass reads them 1.4-2.5x faster than in 64 MB blocks.
READ_BYTES = 16 << 20


def frames_per_read(movie: Any, multiple: int = 1) -> int:
    """Frames in a :data:`READ_BYTES` block of ``movie`` (at least ``multiple``, and a multiple
    of it)."""
    frame_bytes = int(np.prod(movie.shape[1:])) * np.dtype(
        getattr(movie, "dtype", np.float32)).itemsize
    per_read = max(1, READ_BYTES // max(frame_bytes, 1))
    return max(multiple, per_read - per_read % multiple)


#: Threads reading sample frames (a binned movie bins each one: the NumPy work runs in parallel).
SAMPLE_THREADS = 4


def read_frames(movie: Any, indices: np.ndarray) -> np.ndarray:
    """Frames ``indices`` of ``movie``, ``(len(indices), H, W)`` in the reader's dtype, read by
    :data:`SAMPLE_THREADS` threads into one array (200 frames of a 512 x 512 movie binned by 8
    are 1600 frames read and averaged)."""
    indices = [int(t) for t in indices]
    first = np.asarray(movie.read(indices[0], indices[0] + 1))[0]
    out = np.empty((len(indices), *first.shape), first.dtype)
    out[0] = first

    def fill(i: int) -> None:
        out[i] = np.asarray(movie.read(indices[i], indices[i] + 1))[0]

    with ThreadPoolExecutor(SAMPLE_THREADS, thread_name_prefix="caimx-sample") as pool:
        list(pool.map(fill, range(1, len(indices))))
    return out


class MovieLike(Protocol):
    """What the engine needs from a movie: a ``(T, H, W)`` shape and block reads."""

    shape: tuple[int, int, int]

    def read(self, t0: int, t1: int, *, y: slice = ..., x: slice = ...) -> np.ndarray: ...


class ArrayMovie:
    """Adapter giving a ``(T, H, W)`` array (or memmap, or anything sliceable) the reader interface.

    Parameters
    ----------
    data : array-like, shape (T, H, W)
        The movie; it is never copied or modified.
    name : str
        Name recorded in the result (``input_name``).
    """

    def __init__(self, data: Any, *, name: str = "<array>") -> None:
        if len(getattr(data, "shape", ())) != 3:
            raise ValueError(
                f"a movie must have 3 dimensions (frames, height, width), got shape "
                f"{tuple(getattr(data, 'shape', ()))}"
            )
        self._data = data
        self.shape = tuple(int(s) for s in data.shape)
        self.dtype = np.dtype(data.dtype)
        self.fps: float | None = None
        self.path: Path | None = None
        self.name = name

    def read(self, t0: int, t1: int, *, y: slice = slice(None),
             x: slice = slice(None)) -> np.ndarray:
        """Frames ``t0:t1`` of region ``(y, x)`` as a new array ``(t, h, w)``."""
        return np.array(self._data[t0:t1, y, x])


def as_movie(movie: Any) -> Any:
    """``movie`` itself if it has ``.read`` and ``.shape``, else wrapped in :class:`ArrayMovie`."""
    if hasattr(movie, "read") and hasattr(movie, "shape"):
        if len(movie.shape) != 3:
            raise ValueError(f"a movie must be (frames, height, width), got shape {movie.shape}")
        return movie
    return ArrayMovie(movie)


def movie_name(movie: Any) -> str:
    """The input name to record: the file name for a reader, ``<array>`` for arrays."""
    path = getattr(movie, "path", None)
    if path is not None:
        return Path(path).name
    return str(getattr(movie, "name", "<array>"))
