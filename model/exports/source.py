"""What every export reads from a result group: arrays, per-neuron facts and the frame rate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model.results import Result, read_result

FALLBACK_FS = 1.0
"""Frame rate written when neither the movie nor the caller gives one (time is then in frames)."""


@dataclass(frozen=True)
class ExportSource:
    """A result group loaded for export.

    Attributes
    ----------
    result : Result
        Footprints ``(K, H, W)`` float32, traces ``(K, T)`` float32, images, neuron facts, attrs.
    fs : float
        Frames per second used for time stamps.
    fs_known : bool
        False when ``fs`` is :data:`FALLBACK_FS` because no rate was recorded or given.
    path : Path
        The result group's folder.
    created : datetime
        When the result group was written (UTC); NWB's ``session_start_time`` falls back to it.
    """

    result: Result
    fs: float
    fs_known: bool
    path: Path
    created: datetime

    @property
    def movie_shape(self) -> tuple[int, int, int]:
        n_frames = int(self.result.traces.shape[1])
        height, width = (int(v) for v in self.result.footprints.shape[1:])
        return n_frames, height, width

    @property
    def input_name(self) -> str:
        return str(self.result.attrs.get("input", {}).get("name") or self.path.stem)

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.result.attrs.get("model") or {})

    def neuron(self, name: str) -> np.ndarray:
        return np.asarray(self.result.neurons[name])


def recorded_fs(attrs: dict[str, Any]) -> float | None:
    """The movie's frame rate as stored in the result attributes, or None."""
    fps = (attrs.get("input") or {}).get("fps")
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        return None
    return fps if np.isfinite(fps) and fps > 0 else None


def load_source(path: str | Path, *, fs: float | None = None) -> ExportSource:
    """Read the result group at ``path`` for export.

    Parameters
    ----------
    path : str or Path
        A result group written by ``model.results.ResultWriter``.
    fs : float, optional
        Frames per second; overrides the rate recorded with the movie.

    Raises
    ------
    ValueError
        ``path`` is not a result group, or ``fs`` is not a positive number.
    """
    if fs is not None and not (np.isfinite(fs) and fs > 0):
        raise ValueError(f"the frame rate must be a positive number of frames per second, not {fs}")
    result = read_result(path)
    rate = fs if fs is not None else recorded_fs(result.attrs)
    path = Path(path)
    marker = path / "zarr.json"
    stamp = (marker if marker.exists() else path).stat().st_mtime
    return ExportSource(
        result=result,
        fs=float(rate if rate is not None else FALLBACK_FS),
        fs_known=rate is not None,
        path=path,
        created=datetime.fromtimestamp(stamp, tz=UTC),
    )
