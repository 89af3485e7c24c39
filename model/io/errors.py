"""Errors raised for files that are not usable movies."""

from __future__ import annotations


class MovieFormatError(ValueError):
    """The file is not a movie caimx can use; the message says why in plain words."""


class UnsupportedFormatError(MovieFormatError):
    """The file is not in any format caimx reads (TIFF, HDF5, NWB, ``.sbx``, ``.npy``, Zarr)."""


class MovieOptionError(MovieFormatError):
    """A reading option names what the file does not have (a plane or channel out of range)."""
