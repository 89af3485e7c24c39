"""NumPy ``.npy`` movies, memory-mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.io.base import MovieReader
from model.io.errors import MovieFormatError


class NpyMovie(MovieReader):
    """A ``(T, H, W)`` array saved with :func:`numpy.save`, read through a memory map."""

    def __init__(self, path: Path, *, fps: float | None = None) -> None:
        try:
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
        if not isinstance(array, np.ndarray):
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

    def _read(self, t0: int, t1: int, y: slice, x: slice) -> np.ndarray:
        return self._array[t0:t1, y, x]

    def close(self) -> None:
        mm = getattr(self._array, "_mmap", None)
        self._array = None  # type: ignore[assignment]
        if mm is not None:
            mm.close()
