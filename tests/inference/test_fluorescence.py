"""Each neuron's fluorescence and neuropil read from the movie (``model.inference.extract``)."""

from __future__ import annotations

import numpy as np
import pytest

from model.inference.extract import (
    NeuropilRing,
    PlacedFootprints,
    extract_fluorescence,
    extraction_weights,
)
from model.inference.params import MotionParams


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two disk cells with known traces on a neuropil that fluctuates on its own, plus noise."""
    rng = np.random.default_rng(seed)
    t, h, w = 300, 48, 48
    yy, xx = np.mgrid[:h, :w]
    footprints = np.stack([((yy - 14) ** 2 + (xx - 14) ** 2 <= 16).astype(np.float32),
                           ((yy - 32) ** 2 + (xx - 30) ** 2 <= 16).astype(np.float32)])
    traces = np.maximum(rng.normal(0, 1, (2, t)).cumsum(1), 0).astype(np.float32)
    neuropil = (5 + np.sin(np.arange(t) / 7.0)).astype(np.float32)
    movie = 100 + 10 * neuropil[:, None, None] * np.ones((t, h, w), np.float32)
    movie += np.einsum("kt,khw->thw", 20 * traces, footprints)
    movie += rng.normal(0, 2, movie.shape).astype(np.float32)
    return movie.astype(np.float32), footprints, traces, neuropil


def test_fluorescence_follows_the_cells_and_neuropil_the_background() -> None:
    movie, footprints, traces, neuropil = _scene()
    f, fneu = extract_fluorescence(movie, footprints, block_frames=64)
    assert f.shape == fneu.shape == (2, movie.shape[0])
    for k in range(2):
        corrected = f[k] - 1.0 * fneu[k]  # this scene adds neuropil with weight 1 to the cells
        assert np.corrcoef(corrected, traces[k])[0, 1] > 0.99
        assert np.corrcoef(fneu[k], neuropil)[0, 1] > 0.99
        assert np.corrcoef(f[k], traces[k])[0, 1] < np.corrcoef(corrected, traces[k])[0, 1]


def test_the_ring_leaves_every_cell_out() -> None:
    _, footprints, _, _ = _scene()
    ring = NeuropilRing(gap=2, width=8)
    cell_w, ring_w = extraction_weights(footprints, ring)
    assert np.allclose(cell_w.sum(axis=1), 1) and np.allclose(ring_w.sum(axis=1), 1)
    near_cells = np.zeros(footprints.shape[1:], bool)
    for values in footprints:
        near_cells |= values > 0
    used = np.asarray(ring_w.sum(axis=0)).reshape(footprints.shape[1:]) > 0
    assert used.any() and not (used & near_cells).any()


def test_motion_is_corrected_before_reading() -> None:
    movie, footprints, _, _ = _scene(1)
    reference = movie.mean(axis=0)
    shifted = movie.copy()
    shifted[::3] = np.roll(movie[::3], 3, axis=2)  # every third frame 3 px to the right
    still, _ = extract_fluorescence(movie, footprints)
    moved, _ = extract_fluorescence(shifted, footprints)
    fixed, _ = extract_fluorescence(shifted, footprints, reference=reference,
                                    motion_params=MotionParams(max_shift=6))  # fmt: skip
    err_moved = np.abs(moved - still).mean()
    assert np.abs(fixed - still).mean() < 0.2 * err_moved


def test_footprints_must_match_the_frames() -> None:
    movie, footprints, _, _ = _scene()
    with pytest.raises(ValueError, match="do not match"):
        extract_fluorescence(movie[:, :40], footprints)


def _overlapping_pair(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two disk cells sharing about a third of their pixels, a third apart, and their traces."""
    rng = np.random.default_rng(seed)
    t, size = 400, 40
    yy, xx = np.mgrid[:size, :size]
    footprints = np.stack([((yy - 20) ** 2 + (xx - c) ** 2 <= 36).astype(np.float32)
                           for c in (16, 23)] + [((yy - 6) ** 2 + (xx - 33) ** 2 <= 9)
                                                 .astype(np.float32)])
    spikes = (rng.random((3, t)) < 0.03).astype(np.float32)
    kernel = np.exp(-np.arange(60) / 10.0)
    traces = np.stack([np.convolve(s, kernel)[:t] for s in spikes]).astype(np.float32)
    movie = np.einsum("kt,khw->thw", traces, footprints)
    movie += rng.normal(0, 0.05, movie.shape).astype(np.float32)
    return movie, footprints, traces


def test_demixing_separates_overlapping_cells() -> None:
    from model.inference.extract import demix, mixing_matrix

    movie, footprints, traces = _overlapping_pair()
    f, _ = extract_fluorescence(movie, footprints)
    m = mixing_matrix(footprints).toarray()
    assert m[0, 1] > 0.2 and m[1, 0] > 0.2 and m[0, 2] == m[2, 0] == 0
    assert m[2, 2] == pytest.approx(1.0)
    mixed = [np.corrcoef(f[k], traces[k])[0, 1] for k in range(3)]
    separated = demix(f, footprints, ridge=1e-4)
    unmixed = [np.corrcoef(separated[k], traces[k])[0, 1] for k in range(3)]
    assert max(mixed[:2]) < 0.98 and min(unmixed[:2]) > 0.995
    assert unmixed[2] == pytest.approx(mixed[2], abs=1e-6)  # an isolated cell is only rescaled
    np.testing.assert_allclose(separated[:2], traces[:2], atol=0.05 * traces[:2].max())


def test_demixing_twin_footprints_stays_finite() -> None:
    from model.inference.extract import demix

    movie, footprints, _ = _overlapping_pair()
    twins = np.concatenate([footprints[:1], footprints[:1]])
    f, _ = extract_fluorescence(movie, twins)
    out = demix(f, twins)
    assert np.isfinite(out).all() and np.abs(out).max() < 10 * np.abs(f).max()
    assert np.corrcoef(out[0], f[0])[0, 1] > 0.99
    assert demix(np.zeros((0, 5), np.float32), np.zeros((0, 8, 8), np.float32)).shape == (0, 5)


def test_footprints_held_as_boxes_read_as_the_written_stack() -> None:
    """The engine hands the fluorescence pass the footprints it just wrote, as boxes: the same
    weights and traces as reading the (K, H, W) stack back."""
    movie, footprints, _, _ = _scene()
    boxes = []
    for values in footprints:
        ys, xs = np.nonzero(values)
        y0, x0 = ys.min() - 1, xs.min()  # a box with an empty row, as footprints may have
        boxes.append((y0, x0, values[y0:ys.max() + 1, x0:xs.max() + 1].copy()))
    placed = PlacedFootprints(boxes, footprints.shape[1:])
    assert placed.shape == footprints.shape
    for dense, held in zip(extraction_weights(footprints), extraction_weights(placed),
                           strict=True):
        assert (dense != held).nnz == 0
    np.testing.assert_array_equal(extract_fluorescence(movie, placed)[0],
                                  extract_fluorescence(movie, footprints)[0])
