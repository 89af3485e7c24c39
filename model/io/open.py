"""Choosing a reader for a file by looking at its first bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from model.io.base import MovieReader
from model.io.errors import MovieFormatError, UnsupportedFormatError
from model.io.formats import format_of_head, make_reader
from model.io.remote import is_url

MIN_FRAMES = 2
"""Fewest frames any reader accepts; the network needs more (see the model card's ``T``)."""

_OTHER_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"PK\x03\x04": "a ZIP archive",
    b"%PDF": "a PDF document",
    b"RIFF": "an AVI/RIFF file",
    b"\x1f\x8b": "a gzip-compressed file",
}


def sniff_format(path: str | os.PathLike[str]) -> str:
    """The container format of a movie: one of :data:`model.io.formats.FORMATS`.

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
    kind = format_of_head(head, path)
    if kind is not None:
        return kind
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
        reader = make_reader(sniff_format(path), path, given)
    if reader.shape[0] < MIN_FRAMES:
        reader.close()
        raise MovieFormatError(
            f"{path.name!r} has only {reader.shape[0]} frame; a movie needs at least {MIN_FRAMES}"
        )
    return reader

