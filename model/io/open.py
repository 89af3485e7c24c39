"""Choosing a reader for a file by looking at its first bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from model.io.base import MovieReader
from model.io.errors import MovieFormatError, UnsupportedFormatError

MIN_FRAMES = 2
"""Fewest frames any reader accepts; the network needs more (see the model card's ``T``)."""

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_NPY_MAGIC = b"\x93NUMPY"
_OTHER_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x89HDF": "an HDF5 file",
    b"PK\x03\x04": "a ZIP archive",
    b"%PDF": "a PDF document",
    b"RIFF": "an AVI/RIFF file",
    b"\x1f\x8b": "a gzip-compressed file",
}


def sniff_format(path: str | os.PathLike[str]) -> str:
    """``"tiff"``, ``"npy"`` or ``"zarr"`` for a readable movie container.

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
        raise UnsupportedFormatError(f"{path.name!r} is a folder, not a Zarr store or a movie file")
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
    seen = next((what for magic, what in _OTHER_MAGIC.items() if head.startswith(magic)), None)
    looks = f"it looks like {seen}" if seen else "its first bytes match none of these"
    raise UnsupportedFormatError(
        f"{path.name!r} is not a movie caimx can read: expected a multi-page TIFF, a NumPy "
        f".npy file or a Zarr array, and {looks}"
    )


def open_movie(path: str | os.PathLike[str], **options: Any) -> MovieReader:
    """Open a movie lazily; only the header is read here.

    Parameters
    ----------
    path
        A multi-page TIFF (``.tif``/``.tiff``, BigTIFF, ImageJ), a ``.npy`` file, or a Zarr
        array/group directory. The format is recognised from the content, not the name.
    **options
        ``fps`` (float) for ``.npy`` movies, which do not record it; ``array`` (str) to pick the
        movie inside a Zarr group.

    Returns
    -------
    MovieReader
        With ``.shape`` ``(T, H, W)``, ``.dtype``, ``.fps`` and ``.read(t0, t1, y=, x=)``.

    Raises
    ------
    MovieFormatError
        The file is not a usable movie; the message says why.
    """
    path = Path(path)
    kind = sniff_format(path)
    if kind == "tiff":
        from model.io.tiff import TiffMovie

        reader: MovieReader = TiffMovie(path)
    elif kind == "npy":
        from model.io.npy import NpyMovie

        reader = NpyMovie(path, fps=options.get("fps"))
    else:
        from model.io.zarr_movie import ZarrMovie

        reader = ZarrMovie(path, array=options.get("array"))
    if reader.shape[0] < MIN_FRAMES:
        reader.close()
        raise MovieFormatError(
            f"{path.name!r} has only {reader.shape[0]} frame; a movie needs at least {MIN_FRAMES}"
        )
    return reader
