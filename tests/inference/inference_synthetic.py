"""Synthetic candidates for stitching tests (pure inputs; no network involved)."""

from __future__ import annotations

import numpy as np

from model.inference.decide import Candidates
from model.inference.params import InferenceParams, PlanParams
from model.inference.plan import Plan, make_plan


def small_plan(shape=(250, 64, 64), **plan_kw) -> Plan:
    """A 3 x 3 grid of 32 px tiles overlapping by 8 px (the stitching cases are drawn on it)."""
    plan_kw = {"tile_overlap": 8, **plan_kw}
    return make_plan(shape, patch=(100, 32, 32), trace_offset=2, params=PlanParams(**plan_kw),
                     movie_low=0.0, movie_high=1.0, all_params=InferenceParams().to_dict())


def disk(shape, center, radius) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def candidates_for(plan: Plan, items: list[tuple[int, np.ndarray, np.ndarray]]) -> Candidates:
    """``items``: (tile index, full-frame bool mask, trace (L,)); masks are cut to the tile."""
    _, _height, _width = plan.movie_shape
    size = plan.patch[1]
    parts = []
    for tile_index, mask, trace in items:
        t = plan.tiles[tile_index]
        view = np.zeros_like(mask)
        view[t.y0:t.y0 + size, t.x0:t.x0 + size] = mask[t.y0:t.y0 + size, t.x0:t.x0 + size]
        if not view.any():
            continue
        ys, xs = np.nonzero(view)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        values = view[y0:y1, x0:x1].astype(np.float32)
        parts.append(Candidates(
            tile=np.array([tile_index], np.int32), channel=np.array([0], np.int32),
            bbox=np.array([[y0, x0, y1 - y0, x1 - x0]], np.int32),
            mask_offsets=np.array([0, values.size], np.int64), masks=values.ravel(),
            traces=np.asarray(trace, np.float32)[None], snr=np.array([10.0], np.float32)))
    return Candidates.concat(parts, plan.trace_length)
