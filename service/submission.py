"""Checks made before a job is queued: the model exists, the upload is a usable movie, and
derived resampling (``match_frame_rate``, ``rescale``) has what it needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from caimx.job_params import JobParams, engine_overrides
from model.inference import resample
from model.inference.params import InferenceParams
from model.io import MovieFormatError, open_movie
from model.registry import UnknownModelError, resolve_model
from service.errors import InvalidParamsError, MovieTooSmallError, UnknownModelNameError


@dataclass(frozen=True)
class MovieFacts:
    shape: tuple[int, int, int]
    dtype: str
    fps: float | None
    layout: dict[str, int]
    """``planes``, ``plane``, ``channels``, ``channel`` (``MovieReader.layout``)."""


MIN_FRAMES = 16
"""Shortest movie accepted; equal to the inference plan's default ``PlanParams.min_frames``."""
MIN_EDGE = 8
"""Smallest frame edge in pixels; equal to the inference plan's default ``PlanParams.min_size``."""


@dataclass(frozen=True)
class ModelChoice:
    name: str
    version: str
    card: Any
    """The model card (``model.registry.ModelCard``)."""


def choose_model(name: str, models_dir: Path) -> ModelChoice:
    """The installed model called ``name``, or a 422 listing the installed ones."""
    try:
        installed = resolve_model(name, models_dir)
    except UnknownModelError as exc:
        names = sorted(exc.installed)
        raise UnknownModelNameError(
            f"there is no model called {name!r}; installed: {', '.join(names) or 'none'}",
            installed=names,
        ) from exc
    return ModelChoice(name=installed.card.name, version=installed.card.version,
                       card=installed.card)


def inspect_movie(
    path: Path | str, *, min_frames: int = MIN_FRAMES, min_edge: int = MIN_EDGE, **options: object
) -> MovieFacts:
    """Open the movie's header and its first and last frames; raise if it cannot be processed.

    Raises
    ------
    model.io.MovieFormatError
        Not a readable (T, H, W) movie, or truncated.
    MovieTooSmallError
        Fewer than ``min_frames`` frames, or frames smaller than ``min_edge`` pixels.

    ``options`` go to ``open_movie`` (``dataset``, ``channel``, ``plane``, ``fps``,
    ``storage_options`` of a URL).
    """
    with open_movie(path, **options) as movie:
        t, h, w = movie.shape
        if t < min_frames:
            raise MovieTooSmallError(
                f"the movie has {t} frames; caimx needs at least {min_frames}",
                frames=t,
                min_frames=min_frames,
            )
        if min(h, w) < min_edge:
            raise MovieTooSmallError(
                f"the frames are {h}x{w} pixels; caimx needs at least {min_edge}x{min_edge}",
                height=h,
                width=w,
                min_edge=min_edge,
            )
        for frame in (movie.read(0, 1), movie.read(t - 1, t)):
            if frame.dtype.kind == "f" and not np.isfinite(frame).all():
                raise MovieFormatError(
                    f"{movie.path.name!r} has NaN or infinite pixel values; caimx needs finite "
                    "values in every pixel (fill or crop the missing pixels first)")  # fmt: skip
        return MovieFacts(shape=movie.shape, dtype=str(movie.dtype), fps=movie.fps,
                          layout=movie.layout)  # fmt: skip


def check_resampling(params: JobParams, facts: MovieFacts, model: ModelChoice) -> None:
    """422 now rather than a failed job later when ``match_frame_rate`` or ``rescale`` lack the
    movie's frame rate or pixel size or the model card's values (the engine's own rule)."""
    if not (params.match_frame_rate or params.rescale):
        return
    overrides = engine_overrides(params).get("resample", {})
    wanted = InferenceParams.from_dict({"resample": overrides}).resample
    try:
        resample.choose(SimpleNamespace(fps=facts.fps), model.card, wanted)
    except ValueError as exc:
        raise InvalidParamsError(f"{exc} (model {model.name!r})") from exc
