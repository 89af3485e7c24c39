"""Multi-page TIFF movies (plain, ImageJ, BigTIFF), memory-mapped or read page by page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from model.io.base import MovieReader
from model.io.errors import MovieFormatError


class TiffMovie(MovieReader):
    """A multi-page TIFF whose pages are the frames of the movie."""

    def __init__(self, path: Path) -> None:
        try:
            self._tif = tifffile.TiffFile(path)
        except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as exc:
            raise MovieFormatError(
                f"{path.name!r} looks like a TIFF but could not be read ({exc}); "
                "the file may be truncated or damaged"
            ) from exc
        try:
            shape, dtype = self._layout(path)
            super().__init__(path, shape=shape, dtype=dtype, fps=self._fps())
            self._memmap = self._try_memmap()
        except BaseException:
            self._tif.close()
            raise

    def _layout(self, path: Path) -> tuple[tuple[int, int, int], np.dtype]:
        if not self._tif.series:
            raise MovieFormatError(
                f"{path.name!r} is a TIFF without a readable image; it may be truncated or damaged"
            )
        series = self._tif.series[0]
        shape, axes = tuple(series.shape), series.axes
        if "S" in axes:
            raise MovieFormatError(
                f"{path.name!r} holds colour (RGB) images; caimx needs a grayscale movie, "
                "one channel per file"
            )
        if len(shape) < 3:
            raise MovieFormatError(
                f"{path.name!r} is a single {'x'.join(map(str, shape))} image, not a movie; "
                "save all frames of the recording in one multi-page TIFF"
            )
        if len(shape) > 3:
            named = ", ".join(f"{a}={n}" for a, n in zip(axes, shape, strict=True))
            raise MovieFormatError(
                f"{path.name!r} has {len(shape)} dimensions ({named}); caimx expects one plane "
                "and one channel: frames x height x width"
            )
        if len(series.pages) != shape[0] and series.dataoffset is None:
            raise MovieFormatError(
                f"{path.name!r} stores its {shape[0]} frames in {len(series.pages)} compressed "
                "pages; save it with one page per frame"
            )
        dtype = np.dtype(series.dtype)
        return (int(shape[0]), int(shape[1]), int(shape[2])), dtype

    def _fps(self) -> float | None:
        meta = self._tif.imagej_metadata or {}
        if isinstance(meta.get("fps"), int | float) and meta["fps"] > 0:
            return float(meta["fps"])
        interval = meta.get("finterval")
        if isinstance(interval, int | float) and interval > 0:
            return float(1.0 / interval)
        return None

    def _try_memmap(self) -> np.memmap | None:
        series = self._tif.series[0]
        if series.dataoffset is None:
            return None
        dtype = np.dtype(series.dtype).newbyteorder(self._tif.byteorder)
        try:
            return np.memmap(
                self.path, dtype=dtype, mode="r", offset=series.dataoffset, shape=self.shape
            )
        except ValueError as exc:  # the pixel data end beyond the end of the file
            raise MovieFormatError(
                f"{self.path.name!r} is shorter than its header says: the file is truncated or "
                "damaged (incomplete copy or upload?)"
            ) from exc

    def _read(self, t0: int, t1: int, y: slice, x: slice) -> np.ndarray:
        if self._memmap is not None:
            return self._memmap[t0:t1, y, x]
        try:
            frames = self._tif.asarray(key=slice(t0, t1), series=0)
        except (ValueError, OSError, IndexError, tifffile.TiffFileError) as exc:
            raise MovieFormatError(
                f"frames {t0}..{t1 - 1} of {self.path.name!r} could not be read ({exc}); "
                "the file may be truncated or damaged"
            ) from exc
        return frames.reshape(t1 - t0, *self.shape[1:])[:, y, x]

    def close(self) -> None:
        self._memmap = None
        self._tif.close()
