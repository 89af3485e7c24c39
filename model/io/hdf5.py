"""Movies stored as a 3-D dataset of an HDF5 file, read with h5py (lazily, by slices)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import h5py
import numpy as np

from model.io.base import MovieReader
from model.io.errors import MovieFormatError

FPS_ATTRS = ("fps", "frame_rate", "rate", "framerate")


def _datasets(handle: h5py.File) -> list[str]:
    found: list[str] = []

    def visit(name: str, node: object) -> None:
        if isinstance(node, h5py.Dataset) and node.ndim == 3:
            found.append("/" + name)

    handle.visititems(visit)
    return found


def read_fps(*nodes: h5py.HLObject) -> float | None:
    for node in nodes:
        for key in FPS_ATTRS:
            value = node.attrs.get(key)
            if value is not None and np.ndim(value) == 0 and float(value) > 0:
                return float(value)
    return None


class Hdf5FileMovie(MovieReader):
    """A movie inside an HDF5 file (plain HDF5 or NWB), opened from its path or from an open file
    (fsspec) read instead; both are closed with the reader."""

    def _open_file(self, path: Path, handle: BinaryIO | None, failed: str) -> None:
        """Open the file; if h5py cannot, a :class:`MovieFormatError` says ``failed`` (with
        ``{exc}``, the reason) after the file's name."""
        self._handle = handle
        try:
            self._file = h5py.File(handle if handle is not None else path, "r")
        except OSError as exc:
            raise MovieFormatError(f"{path.name!r} " + failed.format(exc=exc)) from exc

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()
        if self._handle is not None:
            self._handle.close()


class Hdf5Movie(Hdf5FileMovie):
    """A ``(T, H, W)`` dataset of an HDF5 file.

    Parameters
    ----------
    path
        The ``.h5``/``.hdf5`` file.
    dataset
        Path of the movie inside the file (e.g. ``/data`` or ``imaging/mov``); default: the only
        3-D dataset in the file.
    fps
        Frame rate when neither the dataset nor the file has an ``fps``/``frame_rate`` attribute.
    """

    def __init__(self, path: Path, *, dataset: str | None = None, fps: float | None = None,
                 handle: BinaryIO | None = None) -> None:  # fmt: skip
        self._open_file(path, handle, "looks like HDF5 but could not be opened ({exc}); the "
                        "file may be truncated or damaged")  # fmt: skip
        try:
            self._data = self._pick(path, dataset)
            super().__init__(path, shape=tuple(int(n) for n in self._data.shape),  # type: ignore[arg-type]
                             dtype=self._data.dtype,
                             fps=read_fps(self._data, self._file) or fps)  # fmt: skip
        except BaseException:
            self._file.close()
            raise

    def _pick(self, path: Path, dataset: str | None) -> h5py.Dataset:
        if dataset is not None:
            node = self._file.get(dataset)
            if not isinstance(node, h5py.Dataset):
                raise MovieFormatError(
                    f"{path.name!r} has no dataset {dataset!r}; 3-D datasets in it: "
                    f"{_datasets(self._file) or 'none'}"
                )
            if node.ndim != 3:
                raise MovieFormatError(
                    f"dataset {dataset!r} of {path.name!r} has shape {node.shape}; caimx expects "
                    "(frames, height, width)"
                )
            return node
        candidates = _datasets(self._file)
        if len(candidates) != 1:
            raise MovieFormatError(
                f"{path.name!r} has {len(candidates)} 3-D datasets ({candidates or 'none'}); "
                "name the movie with the option 'dataset'"
            )
        return self._file[candidates[0]]

    def _read(self, t0: int, t1: int, y: slice, x: slice) -> np.ndarray:
        return self._data[t0:t1, y, x]
