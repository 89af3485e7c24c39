"""Lazy movie readers: TIFF (also hyperstacks, ScanImage, series of files), HDF5, NWB, Scanbox
``.sbx``, NumPy ``.npy`` and Zarr arrays.

``open_movie(path)`` returns a :class:`MovieReader` that knows the movie's shape ``(T, H, W)``,
dtype and frame rate after reading only the file header, and reads frames on demand with
``reader.read(t0, t1, y=..., x=...)``. Nothing here reads a whole movie into memory, and nothing
imports TensorFlow, so the HTTP service can validate uploads with it.

Anything that is not a usable movie raises :class:`MovieFormatError` (a ``ValueError``) with a
message meant for the person who recorded the movie.
"""

from model.io.base import MovieReader
from model.io.errors import MovieFormatError, MovieOptionError, UnsupportedFormatError
from model.io.formats import FORMATS
from model.io.open import MIN_FRAMES, open_movie, sniff_format

__all__ = [
    "FORMATS",
    "MIN_FRAMES",
    "MovieFormatError",
    "MovieOptionError",
    "MovieReader",
    "UnsupportedFormatError",
    "open_movie",
    "sniff_format",
]
