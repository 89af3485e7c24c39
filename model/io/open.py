"""Choosing a reader for a file by looking at its first bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from model.io.base import MovieReader
from model.io.errors import MovieFormatError, UnsupportedFormatError
from model.io.remote import is_url

MIN_FRAMES = 2
"""Fewest frames any reader accepts; the network needs more (see the model card's ``T``)."""

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_NPY_MAGIC = b"\x93NUMPY"
_OTHER_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"PK\x03\x04": "a ZIP archive",
    b"%PDF": "a PDF document",
    b"RIFF": "an AVI/RIFF file",
    b"\x1f\x8b": "a gzip-compressed file",
}


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
FORMATS = ("tiff", "tiff-series", "npy", "zarr", "hdf5", "nwb", "sbx")


def _is_nwb(path: Path) -> bool:
    import h5py

    from model.io.nwb import is_nwb

    try:
        with h5py.File(path, "r") as handle:
            return is_nwb(handle)
    except OSError:
        return False


def sniff_format(path: str | os.PathLike[str]) -> str:
    """The container format of a movie: one of :data:`FORMATS`.

    Recognised from the content (magic bytes, NWB attributes), except Scanbox ``.sbx`` files,
    which have no header and are known by their name and their ``.mat`` info file, and folders:
    a Zarr store, or a folder of TIFF files (``tiff-series``).

    Raises
    ------
    MovieFormatError
        The file is missing or empty; :class:`UnsupportedFormatError` when it is another format.
    """
    path = Path(path)
    if path.is_dir():
        if (
            (path / "zarr.json").exists()
            or (path / ".zarray").exists()
            or (path / ".zgroup").exists()
        ):
            return "zarr"
        from model.io.tiff_series import tiff_files

        if tiff_files(path):
            return "tiff-series"
        raise UnsupportedFormatError(
            f"{path.name!r} is a folder, but neither a Zarr store nor a folder of TIFF files"
        )
    if not path.exists():
        raise MovieFormatError(f"{str(path)!r} does not exist")
    with path.open("rb") as handle:
        head = handle.read(16)
    if not head:
        raise MovieFormatError(f"{path.name!r} is empty (0 bytes)")
    if head.startswith(_TIFF_MAGIC):
        return "tiff"
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head.startswith(_HDF5_MAGIC):
        return "nwb" if _is_nwb(path) else "hdf5"
    if path.suffix.lower() == ".sbx" or (
        path.suffix.lower() == ".mat" and path.with_suffix(".sbx").is_file()
    ):
        return "sbx"
    seen = next((what for magic, what in _OTHER_MAGIC.items() if head.startswith(magic)), None)
    looks = f"it looks like {seen}" if seen else "its first bytes match none of these"
    raise UnsupportedFormatError(
        f"{path.name!r} is not a movie caimx can read: expected a multi-page TIFF, a NumPy "
        f".npy file, HDF5, NWB, Scanbox .sbx or a Zarr array, and {looks}"
    )


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


def open_movie(path: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None,
               **options: Any) -> MovieReader:  # fmt: skip
    """Open a movie lazily; only the header is read here.

    Parameters
    ----------
    path
        A multi-page TIFF (``.tif``/``.tiff``, BigTIFF, ImageJ hyperstack, ScanImage), a folder of
        TIFF files (one movie, natural name order), a ``.npy`` file, an HDF5 file, an NWB file
        (``TwoPhotonSeries``), a Scanbox ``.sbx`` file (with its ``.mat``), or a Zarr
        array/group directory. The format is recognised from the content, not the name.
        An fsspec URL (``s3://bucket/key.tif``, ``https://...``) is read remotely, by ranges
        (:mod:`model.io.remote`): a TIFF, HDF5, NWB or ``.npy`` file, or a Zarr store.
    storage_options
        fsspec options of a URL's protocol (endpoint, region; credentials come from the
        environment).
    **options
        ``fps`` (float): frame rate when the file records none; ``dataset`` (str): the movie's
        dataset in an HDF5 file or its ``TwoPhotonSeries`` in an NWB file; ``array`` (str): the
        movie inside a Zarr group (``dataset`` is accepted too); ``channel``/``plane`` (int): one
        channel/plane of a hyperstack, ScanImage or Scanbox file. ``None`` values are ignored.

    Returns
    -------
    MovieReader
        With ``.shape`` ``(T, H, W)``, ``.dtype``, ``.fps`` and ``.read(t0, t1, y=, x=)``.

    Raises
    ------
    MovieFormatError
        The file is not a usable movie; the message says why.
    """
    given = {k: v for k, v in options.items() if v is not None}
    if is_url(path):
        from model.io.remote import open_url

        reader = open_url(str(path), storage_options=storage_options, **given)
        path = reader.path
    else:
        path = Path(path)
        kind = sniff_format(path)
        if kind == "zarr" and "dataset" in given:
            given.setdefault("array", given.pop("dataset"))
        kwargs = {k: v for k, v in given.items() if k in OPTIONS[kind]}
        reader = _READERS[kind](path, **kwargs)
    if reader.shape[0] < MIN_FRAMES:
        reader.close()
        raise MovieFormatError(
            f"{path.name!r} has only {reader.shape[0]} frame; a movie needs at least {MIN_FRAMES}"
        )
    return reader


def _tiff(path: Path, **kw: Any) -> MovieReader:
    from model.io.tiff import TiffMovie

    return TiffMovie(path, **kw)


def _tiff_series(path: Path, **kw: Any) -> MovieReader:
    from model.io.tiff_series import TiffSeriesMovie

    return TiffSeriesMovie(path, **kw)


def _npy(path: Path, **kw: Any) -> MovieReader:
    from model.io.npy import NpyMovie

    return NpyMovie(path, **kw)


def _zarr(path: Path, **kw: Any) -> MovieReader:
    from model.io.zarr_movie import ZarrMovie

    fps = kw.pop("fps", None)
    reader = ZarrMovie(path, **kw)
    reader.fps = reader.fps or fps
    return reader


def _hdf5(path: Path, **kw: Any) -> MovieReader:
    from model.io.hdf5 import Hdf5Movie

    return Hdf5Movie(path, **kw)


def _nwb(path: Path, **kw: Any) -> MovieReader:
    from model.io.nwb import NwbMovie

    return NwbMovie(path, **kw)


def _sbx(path: Path, **kw: Any) -> MovieReader:
    from model.io.sbx import SbxMovie

    return SbxMovie(path, **kw)


_READERS = {"tiff": _tiff, "tiff-series": _tiff_series, "npy": _npy, "zarr": _zarr,
            "hdf5": _hdf5, "nwb": _nwb, "sbx": _sbx}  # fmt: skip
