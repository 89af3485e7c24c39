"""The movie formats caimx reads: how a file shows its format in its first bytes, the options
each format takes, and its reader (imported when first used). Shared by :mod:`model.io.open`
(local files) and :mod:`model.io.remote` (URLs)."""

from __future__ import annotations

import importlib
import os
from typing import Any

from model.io.base import MovieReader

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
NPY_MAGIC = b"\x93NUMPY"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
FORMATS = ("tiff", "tiff-series", "npy", "zarr", "hdf5", "nwb", "sbx")

OPTIONS = {
    "tiff": ("channel", "plane", "fps"),
    "tiff-series": ("channel", "plane", "fps"),
    "npy": ("fps",),
    "zarr": ("array", "fps"),
    "hdf5": ("dataset", "fps"),
    "nwb": ("dataset", "fps"),
    "sbx": ("channel", "fps"),
}
"""Options each format understands; others are ignored (a job's options suit any format)."""

_READERS = {
    "tiff": ("model.io.tiff", "TiffMovie"),
    "tiff-series": ("model.io.tiff_series", "TiffSeriesMovie"),
    "npy": ("model.io.npy", "NpyMovie"),
    "zarr": ("model.io.zarr_movie", "ZarrMovie"),
    "hdf5": ("model.io.hdf5", "Hdf5Movie"),
    "nwb": ("model.io.nwb", "NwbMovie"),
    "sbx": ("model.io.sbx", "SbxMovie"),
}


def format_of_head(head: bytes, source: str | os.PathLike[str] | Any) -> str | None:
    """``tiff``, ``npy``, ``hdf5`` or ``nwb`` from a file's first bytes; ``None`` for others.

    ``source`` (a path, or an open file left at its start) is opened with h5py only to tell NWB
    from plain HDF5.
    """
    if head.startswith(TIFF_MAGIC):
        return "tiff"
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(HDF5_MAGIC):
        return "nwb" if _is_nwb(source) else "hdf5"
    return None


def _is_nwb(source: Any) -> bool:
    import h5py

    from model.io.nwb import is_nwb

    try:
        with h5py.File(source, "r") as handle:
            return is_nwb(handle)
    except OSError:
        return False  # the HDF5 reader says what is wrong with the file
    finally:
        if hasattr(source, "seek"):
            source.seek(0)


def make_reader(kind: str, path: Any, options: dict[str, Any], **source: Any) -> MovieReader:
    """The reader of format ``kind``: ``path`` names the movie; ``options`` (``None`` values
    dropped) are those :data:`OPTIONS` lists for it (``dataset`` names a Zarr group's array too);
    ``source`` goes to the reader as is (``handle``: an open file; ``store``: a Zarr store)."""
    given = {k: v for k, v in options.items() if v is not None}
    if kind == "zarr" and "dataset" in given:
        given.setdefault("array", given.pop("dataset"))
    module, name = _READERS[kind]
    reader = getattr(importlib.import_module(module), name)
    return reader(path, **source, **{k: v for k, v in given.items() if k in OPTIONS[kind]})
