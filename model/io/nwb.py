"""``TwoPhotonSeries`` of an NWB 2 file (HDF5), read lazily through h5py.

The file is found by its ``neurodata_type`` attributes, as written by pynwb, so opening a movie does
not import pynwb (and the pandas stack behind it) into the API. Its frame rate is the ``rate`` of
``starting_time``.

Axis order: the NWB schema stores ``ImageSeries.data`` (and so ``TwoPhotonSeries.data``) as
``(frame, x, y)``, width before height, whereas caimx movies are ``(T, H, W)`` = ``(T, y, x)``.
The reader therefore presents ``data[t, x, y]`` as ``movie[t, y, x]`` (``shape`` is
``(T, data.shape[2], data.shape[1])``) and transposes each block it reads; nothing else is
loaded. One exception: when the series' ``dimension`` field (``[width, height]`` by the schema)
names a non-square frame whose width is ``data.shape[2]``, the writer stored ``(frame, y, x)``
despite the schema, and that file is read as stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import h5py
import numpy as np

from model.io.errors import MovieFormatError
from model.io.hdf5 import Hdf5FileMovie


def is_nwb(handle: h5py.File) -> bool:
    return "nwb_version" in handle.attrs or handle.attrs.get("neurodata_type") == "NWBFile"


def two_photon_series(handle: h5py.File) -> dict[str, h5py.Group]:
    """Every ``TwoPhotonSeries`` group, by its path in the file."""
    found: dict[str, h5py.Group] = {}

    def visit(name: str, node: object) -> None:
        if isinstance(node, h5py.Group):
            kind = node.attrs.get("neurodata_type")
            if isinstance(kind, bytes):
                kind = kind.decode()
            if kind == "TwoPhotonSeries":
                found["/" + name] = node

    handle.visititems(visit)
    return found


def _stored_yx(group: h5py.Group, n1: int, n2: int) -> bool:
    """Does ``dimension`` say that ``data`` is ``(frame, y, x)`` (against the schema)?"""
    dimension = group.get("dimension")
    if not isinstance(dimension, h5py.Dataset) or dimension.shape != (2,) or n1 == n2:
        return False
    width, height = (int(v) for v in dimension[()])
    return (width, height) == (n2, n1)


class NwbMovie(Hdf5FileMovie):
    """The imaging data of one ``TwoPhotonSeries``.

    Parameters
    ----------
    path
        The ``.nwb`` file.
    dataset
        The series: its name (``TwoPhotonSeries``) or its path (``/acquisition/TwoPhotonSeries``);
        default: the only one in the file.
    fps
        Frame rate when the series has timestamps instead of a rate.
    """

    def __init__(self, path: Path, *, dataset: str | None = None, fps: float | None = None,
                 handle: BinaryIO | None = None) -> None:  # fmt: skip
        self._open_file(path, handle, "could not be opened as NWB ({exc})")
        try:
            group = self._pick(path, dataset)
            data = group.get("data")
            if not isinstance(data, h5py.Dataset) or data.ndim != 3:
                shape = getattr(data, "shape", None)
                raise MovieFormatError(
                    f"the TwoPhotonSeries {group.name!r} of {path.name!r} has data of shape "
                    f"{shape}; caimx reads one plane: (frames, x, y) as NWB stores it"
                )
            self._data = data
            _, n1, n2 = (int(n) for n in data.shape)
            self.stored_yx = _stored_yx(group, n1, n2)
            """True for a file that stores ``(frame, y, x)`` against the schema (read as is)."""
            shape = (int(data.shape[0]), n1, n2) if self.stored_yx else (int(data.shape[0]), n2, n1)
            rate = group.get("starting_time")
            found = rate.attrs.get("rate") if isinstance(rate, h5py.Dataset) else None
            series_fps = float(found) if found is not None and float(found) > 0 else None
            super().__init__(path, shape=shape, dtype=data.dtype, fps=series_fps or fps)
        except BaseException:
            self._file.close()
            raise

    def _pick(self, path: Path, dataset: str | None) -> h5py.Group:
        series = two_photon_series(self._file)
        if dataset is not None:
            for name, group in series.items():
                if dataset in (name, name.rsplit("/", 1)[-1], name.lstrip("/")):
                    return group
            raise MovieFormatError(
                f"{path.name!r} has no TwoPhotonSeries {dataset!r}; it has {sorted(series)}"
            )
        if len(series) != 1:
            raise MovieFormatError(
                f"{path.name!r} has {len(series)} TwoPhotonSeries ({sorted(series) or 'none'}); "
                "name one with the option 'dataset'"
            )
        return next(iter(series.values()))

    def _read(self, t0: int, t1: int, y: slice, x: slice) -> np.ndarray:
        if self.stored_yx:
            return self._data[t0:t1, y, x]
        return self._data[t0:t1, x, y].transpose(0, 2, 1)  # (t, x, y) on disk
