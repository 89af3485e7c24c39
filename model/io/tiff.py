"""Multi-page TIFF movies: plain, BigTIFF, ImageJ hyperstacks and ScanImage files.

The file's first image series is seen as axes ending in ``YX``. One axis is time (``T``; else the
page axis ``I``/``Q``; else ``Z`` when it is the only one, as ImageJ stacks saved as slices have
it). A hyperstack's other axes must be chosen: ``channel=`` for ``C``, ``plane=`` for ``Z``.
ScanImage files that save several channels interleaved page by page are split the same way, from
``SI.hChannels.channelSave`` in their metadata. Contiguous pixel data are memory-mapped; compressed
files are read page by page.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tifffile

from model.io.base import MovieReader
from model.io.errors import MovieFormatError

_TIME_AXES = ("T", "I", "Q")
_SI_RATE = re.compile(r"scanFrameRate\s*=\s*([0-9.eE+-]+)")
_SI_CHANNELS = re.compile(r"channelSave\s*=\s*\[?([0-9;, ]+)\]?")


class TiffMovie(MovieReader):
    """A TIFF whose pages are the frames of the movie (see the module text for hyperstacks).

    Parameters
    ----------
    path
        The TIFF file.
    channel, plane
        Which channel (``C``) and which plane (``Z``) of a hyperstack or ScanImage file to read.
    fps
        Frame rate to use when the file does not record one.
    """

    def __init__(
        self, path: Path, *, channel: int | None = None, plane: int | None = None,
        fps: float | None = None,
    ) -> None:  # fmt: skip
        try:
            # tifffile's own ScanImage series miscounts pages of files without the binary SI
            # header; the generic series plus the metadata parsed here covers both kinds.
            self._tif = tifffile.TiffFile(path, is_scanimage=False)
        except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as exc:
            raise MovieFormatError(
                f"{path.name!r} looks like a TIFF but could not be read ({exc}); "
                "the file may be truncated or damaged"
            ) from exc
        try:
            self._si_text = self._scanimage_text()
            shape, dtype = self._layout(path, channel=channel, plane=plane)
            super().__init__(path, shape=shape, dtype=dtype, fps=self._fps() or fps)
            self._memmap = self._try_memmap()
        except BaseException:
            self._tif.close()
            raise

    def _scanimage_text(self) -> str:
        try:
            page = self._tif.pages.first
        except IndexError:
            return ""
        parts = [str(getattr(page, "software", "") or ""), str(page.description or "")]
        text = "\n".join(parts)
        return text if "SI." in text or "scanimage" in text.lower() else ""

    def _axes(self, path: Path) -> tuple[str, tuple[int, ...]]:
        series = self._tif.series[0]
        axes, shape = series.axes, tuple(int(n) for n in series.shape)
        if "S" in axes:
            raise MovieFormatError(
                f"{path.name!r} holds colour (RGB) images; caimx needs a grayscale movie, "
                "one channel per file"
            )
        channels = self._si_channels()
        if channels > 1 and len(shape) == 3 and axes[0] in ("I", "Q", "T"):
            if shape[0] % channels:
                raise MovieFormatError(
                    f"{path.name!r} has {shape[0]} pages, not a multiple of its {channels} "
                    "ScanImage channels"
                )
            return "TC" + axes[1:], (shape[0] // channels, channels, *shape[1:])
        return axes, shape

    def _si_channels(self) -> int:
        found = _SI_CHANNELS.search(self._si_text)
        if not found:
            return 1
        return len([c for c in re.split(r"[;, ]+", found.group(1).strip()) if c])

    def _layout(
        self, path: Path, *, channel: int | None, plane: int | None
    ) -> tuple[tuple[int, int, int], np.dtype]:
        if not self._tif.series:
            raise MovieFormatError(
                f"{path.name!r} is a TIFF without a readable image; it may be truncated or damaged"
            )
        axes, shape = self._axes(path)
        if len(shape) < 3:
            raise MovieFormatError(
                f"{path.name!r} is a single {'x'.join(map(str, shape))} image, not a movie; "
                "save all frames of the recording in one multi-page TIFF"
            )
        if not axes.endswith("YX"):
            raise MovieFormatError(f"{path.name!r} has axes {axes}; caimx expects ...YX frames")
        time_axis = next((a for a in _TIME_AXES if a in axes), "Z" if "Z" in axes else None)
        if time_axis is None:
            time_axis = axes[0]
        pick = {"C": channel, "Z": plane}
        index: list[int | slice] = []
        for axis, size in zip(axes[:-2], shape[:-2], strict=True):
            if axis == time_axis:
                index.append(slice(None))
                continue
            chosen = pick.get(axis)
            if chosen is None and size > 1:
                named = ", ".join(f"{a}={n}" for a, n in zip(axes, shape, strict=True))
                option = {"C": "channel", "Z": "plane"}.get(axis)
                hint = f"; choose one with the option {option!r}" if option else ""
                raise MovieFormatError(
                    f"{path.name!r} has {len(shape)} dimensions ({named}); caimx reads one plane "
                    f"and one channel: frames x height x width{hint}"
                )
            chosen = chosen or 0
            if not 0 <= chosen < size:
                raise MovieFormatError(
                    f"{path.name!r} has {size} values on axis {axis}; {chosen} is out of range"
                )
            index.append(chosen)
        self._full_shape = shape
        self._index = index
        self._time_pos = axes.index(time_axis)
        series = self._tif.series[0]
        n_pages = int(np.prod(shape[:-2]))
        if len(series.pages) != n_pages and series.dataoffset is None:
            raise MovieFormatError(
                f"{path.name!r} stores its {n_pages} frames in {len(series.pages)} compressed "
                "pages; save it with one page per frame"
            )
        frames = shape[self._time_pos]
        return (frames, int(shape[-2]), int(shape[-1])), np.dtype(series.dtype)

    def _fps(self) -> float | None:
        meta = self._tif.imagej_metadata or {}
        if isinstance(meta.get("fps"), int | float) and meta["fps"] > 0:
            return float(meta["fps"])
        interval = meta.get("finterval")
        if isinstance(interval, int | float) and interval > 0:
            return float(1.0 / interval)
        found = _SI_RATE.search(self._si_text)
        if found:
            try:
                rate = float(found.group(1))
            except ValueError:
                return None
            return rate if rate > 0 else None
        return None

    def _try_memmap(self) -> np.memmap | None:
        series = self._tif.series[0]
        if series.dataoffset is None:
            return None
        dtype = np.dtype(series.dtype).newbyteorder(self._tif.byteorder)
        try:
            return np.memmap(
                self.path, dtype=dtype, mode="r", offset=series.dataoffset, shape=self._full_shape
            )
        except ValueError as exc:  # the pixel data end beyond the end of the file
            raise MovieFormatError(
                f"{self.path.name!r} is shorter than its header says: the file is truncated or "
                "damaged (incomplete copy or upload?)"
            ) from exc

    def _select(self, t0: int, t1: int) -> tuple[int | slice, ...]:
        index = list(self._index)
        index[self._time_pos] = slice(t0, t1)
        return tuple(index)

    def _read(self, t0: int, t1: int, y: slice, x: slice) -> np.ndarray:
        if self._memmap is not None:
            return self._memmap[(*self._select(t0, t1), y, x)]
        grid = np.arange(int(np.prod(self._full_shape[:-2]))).reshape(self._full_shape[:-2])
        pages = np.asarray(grid[self._select(t0, t1)]).ravel().tolist()
        try:
            frames = self._tif.asarray(key=pages, series=0)
        except (ValueError, OSError, IndexError, tifffile.TiffFileError) as exc:
            raise MovieFormatError(
                f"frames {t0}..{t1 - 1} of {self.path.name!r} could not be read ({exc}); "
                "the file may be truncated or damaged"
            ) from exc
        return frames.reshape(t1 - t0, *self.shape[1:])[:, y, x]

    def close(self) -> None:
        self._memmap = None
        self._tif.close()
