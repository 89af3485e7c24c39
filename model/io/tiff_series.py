"""A folder (or list) of TIFF files that together are one movie, in natural name order.

Rigs such as ScanImage split long recordings into files of a few thousand frames
(``file_00001.tif``, ``file_00002.tif``...). Every file must have the same frame size and
pixel type; only the headers are read when the series is opened.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.io.base import MovieReader
from model.io.errors import MovieFormatError
from model.io.tiff import TiffMovie

TIFF_SUFFIXES = (".tif", ".tiff")


def natural_key(path: Path) -> list[Any]:
    """``file_2.tif`` before ``file_10.tif``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def tiff_files(folder: Path) -> list[Path]:
    """The TIFF files directly in ``folder``, in natural order (hidden files skipped)."""
    found = [p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".")]
    return sorted(found, key=natural_key)


class TiffSeriesMovie(MovieReader):
    """Several multi-page TIFF files read as one ``(T, H, W)`` movie.

    Parameters
    ----------
    path
        The folder holding the files (recorded as the movie's path).
    files
        The files in order; default: :func:`tiff_files` of ``path``.
    **options
        Passed to each :class:`~model.io.tiff.TiffMovie` (``channel``, ``plane``, ``fps``).
    """

    def __init__(self, path: Path, files: Sequence[Path] | None = None, **options: Any) -> None:
        files = list(files) if files is not None else tiff_files(path)
        if not files:
            raise MovieFormatError(f"{path.name!r} holds no .tif files")
        self._options = options
        self._files = files
        self._open: dict[int, TiffMovie] = {}
        first = TiffMovie(files[0], **options)
        self._open[0] = first
        starts, total = [0], first.shape[0]
        try:
            for file in files[1:]:
                with TiffMovie(file, **options) as reader:
                    if reader.shape[1:] != first.shape[1:] or reader.dtype != first.dtype:
                        raise MovieFormatError(
                            f"{file.name!r} has {reader.shape[1]}x{reader.shape[2]} "
                            f"{reader.dtype} frames but {files[0].name!r} has {first.shape[1]}x"
                            f"{first.shape[2]} {first.dtype}; the files of one movie must match"
                        )
                    starts.append(total)
                    total += reader.shape[0]
        except BaseException:
            first.close()
            raise
        self._starts = starts
        self.planes, self.plane = first.planes, first.plane
        self.channels, self.channel = first.channels, first.channel
        super().__init__(path, shape=(total, first.shape[1], first.shape[2]), dtype=first.dtype,
                         fps=first.fps)  # fmt: skip

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    def _reader(self, i: int) -> TiffMovie:
        if i not in self._open:
            if len(self._open) >= 8:  # keep a few files open, not thousands
                oldest = next(iter(self._open))
                self._open.pop(oldest).close()
            self._open[i] = TiffMovie(self._files[i], **self._options)
        return self._open[i]

    def _read(self, t0: int, t1: int, y: slice, x: slice) -> np.ndarray:
        parts = []
        t = t0
        while t < t1:
            i = bisect.bisect_right(self._starts, t) - 1
            reader = self._reader(i)
            stop = min(t1, self._starts[i] + reader.shape[0])
            parts.append(reader.read(t - self._starts[i], stop - self._starts[i], y=y, x=x))
            t = stop
        return np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()
