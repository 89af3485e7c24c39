"""ScanImage-style TIFF files written with tifffile: pages interleaved as ScanImage saves them.

ScanImage writes its settings (``SI.* = value`` lines) into every page's ``Software`` tag and
per-frame values into the description, one page at a time. Shared by the reader, API and worker
tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile


def fastz_settings(*, planes: int, flyback: int = 0, channels: int = 1,
                   volume_rate: float = 7.5) -> str:  # fmt: skip
    """ScanImage 2020+ settings of a fast-z acquisition."""
    saved = ";".join(str(c + 1) for c in range(channels))
    return (f"SI.hRoiManager.scanFrameRate = {volume_rate * (planes + flyback):g}\n"
            f"SI.hRoiManager.scanVolumeRate = {volume_rate:g}\n"
            f"SI.hChannels.channelSave = [{saved}]\nSI.hFastZ.enable = true\n"
            f"SI.hStackManager.enable = true\nSI.hStackManager.numSlices = {planes}\n"
            f"SI.hStackManager.actualNumSlices = {planes}\nSI.hStackManager.framesPerSlice = 1\n"
            f"SI.hStackManager.numFramesPerVolume = {planes}\n"
            f"SI.hStackManager.numFramesPerVolumeWithFlyback = {planes + flyback}\n")


def write_scanimage(path: Path, volumes: np.ndarray, settings: str) -> Path:
    """``volumes`` ``(T, planes + flyback, channels, H, W)`` as one page per frame, channels
    fastest, then planes, then time."""
    pages = volumes.reshape(-1, *volumes.shape[-2:])
    with tifffile.TiffWriter(path) as tif:
        for i, page in enumerate(pages):
            tif.write(page, software=settings, metadata=None, contiguous=False,
                      description=f"frameNumbers = {i + 1}\nframeTimestamps_sec = {i / 30.0}")
    return path


def fastz_movie(planes: list[np.ndarray], *, flyback: int = 1) -> np.ndarray:
    """One channel: ``planes`` (each ``(T, H, W)``) and ``flyback`` frames of zeros per volume,
    as ``(T, planes + flyback, 1, H, W)``."""
    t, h, w = planes[0].shape
    volumes = np.zeros((t, len(planes) + flyback, 1, h, w), planes[0].dtype)
    for z, plane in enumerate(planes):
        volumes[:, z, 0] = plane
    return volumes
