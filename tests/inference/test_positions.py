"""Where neurons come out: one neuron per cell, at the cell's position, across tiles and windows.

A stand-in network (no TensorFlow) reports, per patch, every pixel whose peak brightness stands
out; it puts all of a patch's cells into channel 0, as the published mini weights often do with
two or more active cells in one patch, and it only sees the part of a cell inside its patch.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from model.inference import InferenceParams, process_movie
from model.inference.decide import mask_components
from model.results import read_result

CARD = {"name": "peaks", "version": "0", "T": 20, "H": 16, "W": 16, "N": 2, "trace_offset": 2,
        "input_scaling": "movie-range"}


class PeakPredictor:
    """Channel 0: pixels whose peak over time is above half the patch's brightest peak."""

    def __init__(self, card: dict | None = None, min_peak: float = 0.2) -> None:
        self.card = dict(card or CARD)
        self.min_peak = min_peak

    def predict(self, patches: np.ndarray):
        b, t, h, w = patches.shape
        n = self.card["N"]
        footprints = np.zeros((b, n, h, w), np.float32)
        traces = np.zeros((b, n, t - 4), np.float32)
        for i, patch in enumerate(patches):
            peak = patch.max(axis=0) - np.median(patch)
            if peak.max() < self.min_peak:
                continue
            on = peak > 0.5 * peak.max()
            footprints[i, 0] = on
            traces[i, 0] = patch[2:-2, on].mean(axis=1)
        zeros = np.zeros((b, t, h, w), np.float32)
        return SimpleNamespace(denoised=zeros, attention=zeros, footprints=footprints,
                               raw_footprints=footprints, traces=traces)


def disk_movie(centers, *, shape=(60, 40, 40), radius=3.0, resting=60.0, seed=0):
    """Flat background, Gaussian noise, disks (resting brightness) that flash at different times."""
    rng = np.random.default_rng(seed)
    t, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    movie = 100.0 + rng.normal(0, 2.0, shape)
    masks = []
    for k, (cy, cx) in enumerate(centers):
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        activity = np.zeros(t)
        for start in range(3 + 4 * k, t - 4, 17):
            activity[start:start + 4] = [1.0, 0.7, 0.45, 0.25]
        movie += (resting + 200.0 * activity)[:, None, None] * mask
        masks.append(mask)
    return movie.astype(np.float32), np.array(masks)


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.array(np.nonzero(mask)).mean(axis=1)


def _found_once_at(result, masks, tolerance=1.0):
    found = result.footprints > 0
    assert len(found) == len(masks), f"{len(found)} neurons for {len(masks)} cells"
    errors = []
    for mask in masks:
        true = _centroid(mask)
        distances = [np.linalg.norm(_centroid(f) - true) for f in found]
        errors.append(min(distances))
    assert max(errors) <= tolerance, errors


def test_a_channel_with_two_separate_cells_gives_two_candidates():
    mask = np.zeros((16, 16), np.float32)
    mask[2:6, 2:6] = 0.9
    mask[10:14, 9:13] = 0.8
    mask[0, 15] = 0.7  # one stray pixel: below min_area
    parts = mask_components(mask, 0.5, 4)
    assert [(y0, y1, x0, x1) for y0, y1, x0, x1, _ in parts] == [(2, 6, 2, 6), (10, 14, 9, 13)]
    assert all(on.all() for *_, on in parts)


@pytest.mark.parametrize("motion", [False, True])
def test_cells_in_one_patch_and_across_tile_borders_come_out_once_where_they_are(tmp_path,
                                                                                 motion):
    # tiles of 16 at 0, 8, 16, 24: (16, 20) is cut by the tiles at 0 and 16, (27, 7) by those at
    # 8 and 24; (5, 5) and (5, 30) share the tile at x 16-31 with (16, 20)
    centers = [(5.0, 5.0), (16.0, 20.0), (27.0, 7.0), (5.0, 30.0), (33.0, 33.0)]
    movie, masks = disk_movie(centers)
    params = InferenceParams.from_dict({"motion": {"enabled": motion},
                                        "plan": {"window_overlap": 8},
                                        "decide": {"min_area": 10}})
    process_movie(movie, PeakPredictor(), output=tmp_path / "r.zarr", params=params)
    _found_once_at(read_result(tmp_path / "r.zarr"), masks)


def test_reading_ahead_in_threads_changes_nothing(tmp_path):
    """Chunks read ahead in threads (any number) give the same bytes as reading in turn."""
    movie, _ = disk_movie([(5.0, 5.0), (16.0, 20.0), (27.0, 7.0)], shape=(120, 40, 40))
    results = {}
    for read_ahead in (0, 1, 3):
        params = InferenceParams.from_dict({"plan": {"window_overlap": 8},
                                            "decide": {"min_area": 10}, "read_ahead": read_ahead})
        out = tmp_path / f"r{read_ahead}.zarr"
        summary = process_movie(movie, PeakPredictor(), output=out, params=params)
        assert summary.n_chunks >= 4
        results[read_ahead] = read_result(out)
    for read_ahead in (1, 3):
        np.testing.assert_array_equal(results[read_ahead].footprints, results[0].footprints)
        np.testing.assert_array_equal(results[read_ahead].traces, results[0].traces)


def test_cancel_while_chunks_are_read_ahead(tmp_path):
    from model.inference import InferenceCancelled

    movie, _ = disk_movie([(5.0, 5.0)], shape=(120, 40, 40))
    asked = []

    def should_cancel() -> bool:
        asked.append(1)
        return len(asked) > 2

    params = InferenceParams.from_dict({"plan": {"window_overlap": 8}, "read_ahead": 2})
    with pytest.raises(InferenceCancelled, match="cancelled after 2 of"):
        process_movie(movie, PeakPredictor(), output=tmp_path / "r.zarr", params=params,
                      should_cancel=should_cancel)
