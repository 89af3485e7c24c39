"""Multi-page TIFF movies: plain, BigTIFF, ImageJ hyperstacks and ScanImage files.

The file's first image series is seen as axes ending in ``YX``. One axis is time (``T``; else the
page axis ``I``/``Q``; else ``Z`` when it is the only one, as ImageJ stacks saved as slices have
it). A hyperstack's other axes are chosen with ``channel=`` for ``C`` (needed when there are
several) and ``plane=`` for ``Z`` (default: plane 0).

ScanImage files interleave their pages: for each volume (time point), for each z-plane, for each
saved channel one page (channels fastest). The reader splits them with the metadata ScanImage
writes into every page: the channels from ``SI.hChannels.channelSave``, the planes from
``SI.hStackManager.actualNumSlices`` (or ``numSlices``) when a fast-z or stack acquisition is on
(``SI.hFastZ.enable``, ``SI.hStackManager.enable``). Fly-back frames that ScanImage logs after
the planes of each volume (``numFramesPerVolumeWithFlyback - numFramesPerVolume``, or
``SI.hFastZ.numDiscardFlybackFrames``) are skipped, and so is a last volume cut short by the end
of the acquisition. The frame rate of one plane is ``SI.hRoiManager.scanVolumeRate``.

Contiguous pixel data are memory-mapped; other files are read page by page.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile

from model.io.base import MovieReader, copy_and_release
from model.io.errors import MovieFormatError, MovieOptionError

_TIME_AXES = ("T", "I", "Q")
_SI_LINE = re.compile(r"^\s*(?:scanimage\.)?(SI\.[\w.]+)\s*=\s*(.*?)\s*$", re.MULTILINE)


def scanimage_values(text: str) -> dict[str, str]:
    """``SI.x.y = value`` lines of ScanImage metadata, as text by key (``SI.hChannels...``)."""
    return {key: value for key, value in _SI_LINE.findall(text)}


def _si_int(values: dict[str, str], key: str) -> int | None:
    try:
        return int(float(values[key]))
    except (KeyError, ValueError):
        return None


def _si_true(values: dict[str, str], key: str) -> bool | None:
    value = values.get(key, "").strip().lower()
    return {"true": True, "1": True, "false": False, "0": False}.get(value)


@dataclass(frozen=True)
class ScanImageLayout:
    """How a ScanImage file interleaves its pages: per volume, ``planes + flyback`` slices of
    ``channels`` pages each."""

    planes: int = 1
    flyback: int = 0
    channels: int = 1
    frames_per_slice: int = 1

    @property
    def pages_per_volume(self) -> int:
        return (self.planes + self.flyback) * self.channels

    @classmethod
    def from_values(cls, values: dict[str, str]) -> ScanImageLayout:
        saved = values.get("SI.hChannels.channelSave", "").strip("[]{} ")
        channels = max(1, len([c for c in re.split(r"[;, ]+", saved) if c]))
        slices = (_si_int(values, "SI.hStackManager.actualNumSlices")
                  or _si_int(values, "SI.hStackManager.numSlices") or 1)  # fmt: skip
        switches = [_si_true(values, k) for k in ("SI.hFastZ.enable", "SI.hStackManager.enable")]
        volumetric = slices > 1 and (any(switches) or all(s is None for s in switches))
        if not volumetric:
            return cls(channels=channels)
        with_flyback = _si_int(values, "SI.hStackManager.numFramesPerVolumeWithFlyback")
        per_volume = _si_int(values, "SI.hStackManager.numFramesPerVolume")
        if with_flyback is not None and per_volume is not None:
            flyback = max(0, with_flyback - per_volume)
        elif _si_true(values, "SI.hFastZ.enable") and _si_true(
                values, "SI.hFastZ.discardFlybackFrames") is not False:  # fmt: skip
            flyback = _si_int(values, "SI.hFastZ.numDiscardFlybackFrames") or 0
        else:
            flyback = 0
        return cls(planes=slices, flyback=flyback, channels=channels,
                   frames_per_slice=_si_int(values, "SI.hStackManager.framesPerSlice") or 1)


class TiffMovie(MovieReader):
    """A TIFF whose pages are the frames of the movie (see the module text for hyperstacks).

    Parameters
    ----------
    path
        The TIFF file.
    channel, plane
        Which channel (``C``) and which plane (``Z``) of a hyperstack or ScanImage file to read
        (from 0; default plane 0). ``planes`` and ``channels`` tell how many the file has.
    fps
        Frame rate to use when the file does not record one.
    handle
        An open binary file to read instead of ``path`` (e.g. an fsspec file of a remote movie;
        ``path`` then only names it). It is closed with the reader.
    """

    def __init__(
        self, path: Path, *, channel: int | None = None, plane: int | None = None,
        fps: float | None = None, handle: BinaryIO | None = None,
    ) -> None:  # fmt: skip
        self._handle = handle
        try:
            # tifffile's own ScanImage series miscounts pages of files without the binary SI
            # header; the generic series plus the metadata parsed here covers both kinds.
            if handle is not None:  # an open file (fsspec: read by ranges), never memory-mapped
                self._tif = tifffile.TiffFile(handle, name=path.name, is_scanimage=False)
            else:
                self._tif = tifffile.TiffFile(path, is_scanimage=False)
        except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError,
                struct.error) as exc:  # fmt: skip
            if handle is not None:
                handle.close()
            raise MovieFormatError(
                f"{path.name!r} looks like a TIFF but could not be read ({exc}); "
                "the file may be truncated or damaged"
            ) from exc
        try:
            self._si_text = self._scanimage_text()
            self._si = ScanImageLayout.from_values(scanimage_values(self._si_text))
            shape, dtype = self._layout(path, channel=channel, plane=plane)
            super().__init__(path, shape=shape, dtype=dtype, fps=self._fps() or fps)
            self._memmap = self._try_memmap()
            self.concurrent_reads = self._memmap is not None  # else pages through one handle
        except BaseException:
            self.close()
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
        si = self._si
        if si.pages_per_volume > 1 and len(shape) == 3 and axes[0] in ("I", "Q", "T"):
            pages = shape[0]
            if si.planes == 1 and pages % si.channels:
                raise MovieFormatError(
                    f"{path.name!r} has {pages} pages, not a multiple of its {si.channels} "
                    "ScanImage channels"
                )
            if si.planes > 1 and si.frames_per_slice > 1:
                raise MovieFormatError(
                    f"{path.name!r} is a ScanImage stack with {si.frames_per_slice} frames per "
                    f"slice at each of {si.planes} planes (a z-stack, not a time series of one "
                    "plane); caimx reads time series"
                )
            volumes = pages // si.pages_per_volume  # a last volume cut short is left out
            if volumes == 0:
                raise MovieFormatError(
                    f"{path.name!r} has {pages} pages, fewer than one ScanImage volume "
                    f"({si.planes} planes + {si.flyback} fly-back x {si.channels} channels)"
                )
            return "TZC" + axes[1:], (volumes, si.planes + si.flyback, si.channels, *shape[1:])
        return axes, shape

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
        pick = {"C": channel, "Z": plane if plane is not None else 0}
        usable = {"Z": self._si.planes} if "Z" in axes and self._si.flyback else {}
        index: list[int | slice] = []
        for axis, size in zip(axes[:-2], shape[:-2], strict=True):
            if axis == time_axis:
                index.append(slice(None))
                continue
            size = usable.get(axis, size)
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
            if axis == "Z":
                self.planes, self.plane = size, chosen
            elif axis == "C":
                self.channels, self.channel = size, chosen
            index.append(chosen)
        for option, value, count in (("plane", plane, self.planes),
                                     ("channel", channel, self.channels)):  # fmt: skip
            if value is not None and not 0 <= value < count:  # no such axis: one
                raise MovieOptionError(
                    f"{path.name!r} has {count} {option}{'s' if count != 1 else ''} (numbered 0 "
                    f"to {count - 1}); there is no {option} {value}"
                )
        self._full_shape = shape
        self._index = index
        self._time_pos = axes.index(time_axis)
        series = self._tif.series[0]
        n_pages = int(np.prod(series.shape[:-2]))
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
        values = scanimage_values(self._si_text)
        volumetric = self._si.planes > 1
        for key in ("SI.hRoiManager.scanVolumeRate",) * volumetric + (
                "SI.hRoiManager.scanFrameRate",):  # fmt: skip
            try:
                rate = float(values[key])
            except (KeyError, ValueError):
                continue
            if rate > 0:
                return rate / (self._si.planes + self._si.flyback) if (
                    volumetric and key.endswith("FrameRate")) else rate  # fmt: skip
        return None

    def _try_memmap(self) -> np.memmap | None:
        series = self._tif.series[0]
        if series.dataoffset is None or self._handle is not None:
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
            return copy_and_release(self._memmap, self._memmap[(*self._select(t0, t1), y, x)])
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
        if self._handle is not None:
            self._handle.close()
