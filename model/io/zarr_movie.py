"""Movies stored as a Zarr array (or a Zarr group holding one 3-D array)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from model.io.base import MovieReader
from model.io.errors import MovieFormatError


class ZarrMovie(MovieReader):
    """A ``(T, H, W)`` Zarr array; ``array`` names it inside a group when there are several;
    ``fps``: the frame rate when the array's attributes record none."""

    def __init__(self, path: Path, *, array: str | None = None, fps: float | None = None,
                 store: Any = None) -> None:  # fmt: skip
        try:  # ``store``: a Zarr store to read instead of ``path`` (e.g. an FsspecStore)
            node = zarr.open(store=store if store is not None else str(path), mode="r")
        except Exception as exc:  # zarr raises many types for a bad store
            raise MovieFormatError(f"{path.name!r} is not a readable Zarr store ({exc})") from exc
        node = _pick_array(path, node, array)
        found = node.attrs.get("fps")
        fps = float(found) if isinstance(found, int | float) and found > 0 else fps
        shape = tuple(int(n) for n in node.shape)
        if len(shape) != 3:
            raise MovieFormatError(
                f"{path.name!r} holds a {len(shape)}-D array {shape}; caimx expects "
                "(frames, height, width)"
            )
        self._array = node
        super().__init__(path, shape=shape, dtype=np.dtype(node.dtype), fps=fps)  # type: ignore[arg-type]

    def _read(self, t0: int, t1: int, y: slice, x: slice) -> np.ndarray:
        return np.asarray(self._array[t0:t1, y, x])


def _pick_array(path: Path, node, name: str | None):
    if isinstance(node, zarr.Array):
        return node
    if name is not None:
        if name not in node:
            raise MovieFormatError(f"{path.name!r} has no array named {name!r}")
        return node[name]
    arrays = [a for _, a in node.arrays() if a.ndim == 3]
    if len(arrays) != 1:
        names = sorted(k for k, _ in node.arrays())
        raise MovieFormatError(
            f"{path.name!r} is a Zarr group with arrays {names}; say which one is the movie"
        )
    return arrays[0]
