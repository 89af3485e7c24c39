"""One way to read blocks of a movie, whether it is a ``model.io`` reader or an in-memory array."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np


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


def movie_sha256(movie: Any, *, block_frames: int = 64) -> str:
    """SHA-256 of the movie's file (streamed), or of its pixel bytes for in-memory movies."""
    digest = hashlib.sha256()
    path = getattr(movie, "path", None)
    if path is not None and Path(path).is_file():
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        return digest.hexdigest()
    n_frames = movie.shape[0]
    for t0 in range(0, n_frames, block_frames):
        block = movie.read(t0, min(n_frames, t0 + block_frames))
        digest.update(np.ascontiguousarray(block).tobytes())
    return digest.hexdigest()
