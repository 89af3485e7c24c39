"""The chunk plan: temporal windows x groups of spatial tiles, deterministic and JSON-serializable.

Padding rule (documented in ``docs/results.md``)
------------------------------------------------
*Time.* The network trims ``trace_offset`` (2) frames at each end of a window. Positions are
counted on a padded axis: 2 copies of the movie's first frame, the movie, 2 copies of its last
frame (edge replication). A window starting at ``start`` on this axis yields traces for the real
frames ``start .. start + T_model - 5``; consecutive windows overlap by ``window_overlap`` frames.
A movie of at least one window's length is cut into windows of its own frames (the first starts at
its first frame, the last is snapped to its last), so the network never sees a replicated frame
and a movie of exactly one window is fed to it as it is; the first and last 2 frames of the movie
then take the trace of the nearest frame a window covers. A movie shorter than one window (but at
least ``min_frames`` long) is fed padded: 2 replicated frames before it, and mirror reflection
after it up to one window; traces of those frames are dropped.

*Space.* Tiles of ``tile`` pixels overlap by ``tile_overlap``; the last tile of a row or column is
snapped to the image edge. A frame smaller than one tile (but at least ``min_size``) is padded at
its bottom/right by mirror reflection; footprints found in the padding are cropped away.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.inference.params import PlanParams

PLAN_VERSION = 1


@dataclass(frozen=True)
class Window:
    """One temporal window.

    ``start`` is the first frame on the padded time axis; ``first``/``stop`` are the real frames its
    traces cover; ``own_first``/``own_stop`` are the frames it alone owns (for images and denoised).
    """

    index: int
    start: int
    first: int
    stop: int
    own_first: int
    own_stop: int


@dataclass(frozen=True)
class Tile:
    """One spatial tile: origin ``(y0, x0)`` on the padded frame, owned real pixels for images."""

    index: int
    y0: int
    x0: int
    own_y: tuple[int, int]
    own_x: tuple[int, int]


@dataclass(frozen=True)
class Chunk:
    """One unit of work: one window and a group of tiles."""

    id: str
    window: int
    tiles: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """Everything a chunk task and the finalize step need to agree on."""

    movie_shape: tuple[int, int, int]
    patch: tuple[int, int, int]
    trace_offset: int
    windows: tuple[Window, ...]
    tiles: tuple[Tile, ...]
    chunks: tuple[Chunk, ...]
    movie_low: float
    movie_high: float
    params: dict[str, Any]
    version: int = PLAN_VERSION
    source_shape: tuple[int, int, int] | None = None
    temporal_bin: int = 1
    spatial_scale: float = 1.0
    resample: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def frames_shape(self) -> tuple[int, int, int]:
        """``(T, H, W)`` of the movie itself; ``movie_shape`` is what the network sees (binned
        and rescaled, :mod:`model.inference.resample`)."""
        return self.source_shape or self.movie_shape

    @property
    def trace_length(self) -> int:
        """Frames of trace one window yields (``T_model - 2 * trace_offset``)."""
        return self.patch[0] - 2 * self.trace_offset

    @property
    def patches_per_frame(self) -> float:
        """Patches the network sees per frame it is given (its cost: tiles x windows / T)."""
        return len(self.tiles) * len(self.windows) / self.movie_shape[0]

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), so equal plans give equal bytes."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        d = json.loads(text)
        if d.get("version") != PLAN_VERSION:
            raise ValueError(f"unsupported plan version {d.get('version')}")
        return cls(
            movie_shape=tuple(d["movie_shape"]), patch=tuple(d["patch"]),
            trace_offset=d["trace_offset"],
            windows=tuple(Window(**w) for w in d["windows"]),
            tiles=tuple(Tile(**{**t, "own_y": tuple(t["own_y"]), "own_x": tuple(t["own_x"])})
                        for t in d["tiles"]),
            chunks=tuple(Chunk(id=c["id"], window=c["window"], tiles=tuple(c["tiles"]))
                         for c in d["chunks"]),
            movie_low=d["movie_low"], movie_high=d["movie_high"], params=d["params"],
            version=d["version"],
            source_shape=tuple(d["source_shape"]) if d.get("source_shape") else None,
            temporal_bin=int(d.get("temporal_bin", 1)),
            spatial_scale=float(d.get("spatial_scale", 1.0)), resample=d.get("resample") or {},
        )

    def chunk(self, chunk_id: str) -> Chunk:
        for c in self.chunks:
            if c.id == chunk_id:
                return c
        raise KeyError(f"no chunk {chunk_id!r} in this plan")


def origins(length: int, size: int, overlap: int) -> list[int]:
    """Starts of blocks of ``size`` covering ``max(length, size)``; the last snapped to the end."""
    padded = max(length, size)
    stride = size - overlap
    starts = list(range(0, padded - size + 1, stride))
    if starts[-1] != padded - size:
        starts.append(padded - size)
    return starts


def _owned(starts: list[int], size: int, length: int) -> list[tuple[int, int]]:
    """Split the covered range among blocks at the middle of each overlap; clipped to ``length``."""
    cuts = [0] + [(s + (p + size)) // 2 for p, s in itertools.pairwise(starts)]
    cuts.append(length)
    return [(min(a, length), min(b, length)) for a, b in itertools.pairwise(cuts)]


def check_movie(shape: tuple[int, ...], params: PlanParams) -> None:
    """Refuse shapes the engine cannot process, with a message a scientist understands."""
    if len(shape) != 3:
        raise ValueError(f"a movie must be (frames, height, width); got {len(shape)} dimensions "
                         f"{tuple(shape)}")
    n_frames, height, width = shape
    if n_frames < params.min_frames:
        raise ValueError(f"the movie has {n_frames} frames; at least {params.min_frames} "
                         "are needed")
    if min(height, width) < params.min_size:
        raise ValueError(f"frames of {height}x{width} pixels are too small; at least "
                         f"{params.min_size}x{params.min_size} are needed")


def make_windows(n_frames: int, model_t: int, offset: int, overlap: int) -> tuple[Window, ...]:
    """Temporal windows on the padded axis (see module docstring): over the movie's own frames
    when it holds one window or more (a movie of exactly one window is the network's input
    unchanged), else over the padded movie."""
    length = model_t - 2 * offset
    if not 2 * offset <= overlap < model_t:
        raise ValueError(f"window_overlap must be in [{2 * offset}, {model_t - 1}], got {overlap}")
    if n_frames >= model_t:
        starts = [s + offset for s in origins(n_frames, model_t, overlap)]
    else:
        starts = origins(n_frames + 2 * offset, model_t, overlap)
    owned = _owned(starts, length, n_frames)
    return tuple(
        Window(index=i, start=s, first=s, stop=min(s + length, n_frames), own_first=a, own_stop=b)
        for i, (s, (a, b)) in enumerate(zip(starts, owned, strict=True))
    )


def make_tiles(height: int, width: int, tile: int, overlap: int,
               shifted: bool = False) -> tuple[Tile, ...]:
    """Row-major tiles (see module docstring); with ``shifted``, then a second grid.

    The second grid starts half a stride in on both axes and owns no pixels: the images and the
    denoised movie come from the first grid alone, its candidates join the stitch.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"tile_overlap must be in [0, {tile - 1}], got {overlap}")
    ys, xs = origins(height, tile, overlap), origins(width, tile, overlap)
    own_y, own_x = _owned(ys, tile, height), _owned(xs, tile, width)
    tiles = []
    for iy, y0 in enumerate(ys):
        for ix, x0 in enumerate(xs):
            tiles.append(Tile(index=len(tiles), y0=y0, x0=x0, own_y=own_y[iy], own_x=own_x[ix]))
    if shifted:
        half = (tile - overlap) // 2
        for y0 in _shifted(ys, half, tile):
            for x0 in _shifted(xs, half, tile):
                tiles.append(Tile(index=len(tiles), y0=y0, x0=x0, own_y=(y0, y0),
                                  own_x=(x0, x0)))
    return tuple(tiles)


def _shifted(starts: list[int], half: int, tile: int) -> list[int]:
    """Starts moved ``half`` pixels in, those that still fit inside the covered range."""
    end = starts[-1] + tile
    return [s + half for s in starts if s + half + tile <= end]


def make_plan(shape: tuple[int, int, int], *, patch: tuple[int, int, int], trace_offset: int,
              params: PlanParams, movie_low: float, movie_high: float,
              all_params: dict[str, Any] | None = None) -> Plan:
    """Build the chunk plan for a movie of ``shape`` and a model of patch size ``patch``.

    Parameters
    ----------
    shape : (T, H, W)
        Movie shape.
    patch : (T_model, H_model, W_model)
        The model's input size (from its card).
    trace_offset : int
        Frames the network trims at each end of a window (2).
    params : PlanParams
    movie_low, movie_high : float
        Robust movie range (from :func:`model.inference.scaling.movie_range`).
    all_params : dict, optional
        Every processing parameter, stored in the plan for the record.
    """
    check_movie(shape, params)
    n_frames, height, width = (int(s) for s in shape)
    model_t, model_h, model_w = (int(s) for s in patch)
    tile = params.tile or model_h
    if tile != model_h or model_h != model_w:
        raise ValueError(f"tile must equal the model's square patch size {model_h}x{model_w}")
    windows = make_windows(n_frames, model_t, trace_offset, params.window_overlap)
    tiles = make_tiles(height, width, tile, params.tile_overlap, params.shifted_tiling)
    per_chunk = params.tiles_per_chunk or len(tiles)
    chunks = []
    for w in windows:
        for g, first in enumerate(range(0, len(tiles), per_chunk)):
            ids = tuple(t.index for t in tiles[first:first + per_chunk])
            chunks.append(Chunk(id=f"w{w.index:05d}-g{g:04d}", window=w.index, tiles=ids))
    return Plan(
        movie_shape=(n_frames, height, width), patch=(model_t, model_h, model_w),
        trace_offset=trace_offset, windows=windows, tiles=tiles, chunks=tuple(chunks),
        movie_low=float(movie_low), movie_high=float(movie_high), params=dict(all_params or {}),
    )


def padded_index(index: np.ndarray, length: int, *, before: int = 0) -> np.ndarray:
    """Map positions on a padded axis to real indices.

    ``before`` positions replicate index 0; then the real axis; then ``before`` replications of the
    last index; beyond that, mirror reflection (``symmetric``) of the real axis.
    """
    real = np.asarray(index, dtype=np.int64) - before
    out = np.clip(real, 0, length - 1)
    beyond = real - (length + before)
    mirror = beyond >= 0
    if np.any(mirror):
        period = 2 * length
        m = beyond[mirror] % period
        out[mirror] = np.where(m < length, length - 1 - m, m - length)
    return out


def window_weights(plan: Plan, index: int) -> np.ndarray:
    """Blend weights ``(trace_length,)`` float32 of a window's traces: linear ramps in overlaps."""
    w = plan.windows[index]
    length = plan.trace_length
    weights = np.ones(length, dtype=np.float32)
    t = np.arange(length, dtype=np.float32)
    if index > 0:
        prev = plan.windows[index - 1]
        ov = prev.start + length - w.start
        if ov > 0:
            weights = np.minimum(weights, (t + 1) / (ov + 1))
    if index + 1 < len(plan.windows):
        nxt = plan.windows[index + 1]
        ov = w.start + length - nxt.start
        if ov > 0:
            weights = np.minimum(weights, (length - t) / (ov + 1))
    return weights
