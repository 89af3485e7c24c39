"""Training patches and targets: kinds, ordering, scaling, determinism, scoring."""

from __future__ import annotations

import numpy as np

from model.training.patches import TrainingData, make_sample, stack_batch
from model.training.targets import build_targets, select_targets
from model.training.validation import PatchOutputs, score_patches

DATA = TrainingData()


def _sample(i: int, kind: str | None = None, **kw):
    return make_sample(DATA, i, seed=5, frames=20, size=(32, 32), n_channels=4, kind=kind, **kw)


def test_targets_are_ordered_by_onset_and_capped() -> None:
    dff = np.zeros((5, 10))
    dff[0, 6:] = 1.0
    dff[1, 2:] = 0.5
    dff[2, 4:] = 0.3
    dff[3, 1:] = 0.05  # below min_dff: not a target
    dff[4, 0:] = 2.0   # barely visible: not a target
    inside = np.array([100, 100, 100, 100, 5])
    area = np.full(5, 100.0)
    assert select_targets(inside, area, dff, max_neurons=4).tolist() == [1, 2, 0]
    assert select_targets(inside, area, dff, max_neurons=2).tolist() == [1, 2]


def test_build_targets_normalises_and_fills_attention() -> None:
    masks = np.zeros((2, 8, 8), bool)
    masks[0, :3, :3] = masks[1, 5:, 5:] = True
    dff = np.array([[0, 0.1, 0.4, 0.2], [0, 0, 0, 0.0]])
    signal = np.einsum("khw,kt->thw", masks.astype(float), dff)
    t = build_targets(np.array([0]), masks, dff, signal, 3)
    assert t.masks.shape == (3, 8, 8) and t.masks[1:].max() == 0
    np.testing.assert_allclose(t.traces[:, 0], [0, 0.25, 1, 0.5])
    assert t.clean.max() == 1.0
    assert t.attention[0].max() == 0 and t.attention[2][:3, :3].min() == 1
    assert t.attention[2][5:, 5:].max() == 0


def test_samples_are_deterministic_and_scaled() -> None:
    a, b = _sample(3), _sample(3)
    assert a.movie.tobytes() == b.movie.tobytes()
    assert a.targets.masks.tobytes() == b.targets.masks.tobytes()
    assert a.movie.shape == (20, 32, 32) and a.movie.dtype == np.float32
    assert a.movie.min() >= 0.0 and a.movie.max() <= 1.0
    assert not np.array_equal(_sample(4).movie, a.movie)


def test_empty_and_silent_patches_have_no_targets() -> None:
    for kind in ("empty", "silent"):
        s = _sample(1, kind)
        assert s.kind == kind
        assert s.targets.masks.max() == 0 and s.targets.traces.max() == 0
        assert s.targets.attention.max() == 0 and s.targets.clean.max() == 0
        assert s.movie.max() > 0


def test_active_patches_hold_targets_in_channel_order() -> None:
    s = _sample(2, "active", photons=10.0)
    n = s.targets.cells.size
    assert n >= 1 and s.photons == 10.0
    assert np.all(s.targets.masks[:n].reshape(n, -1).max(1) == 1)
    assert np.all(s.targets.masks[n:] == 0)
    onset = [int(np.argmax(s.targets.traces[:, c] > 0)) for c in range(n)]
    assert onset == sorted(onset)


def test_stack_batch_shapes() -> None:
    x, y = stack_batch([_sample(0), _sample(1)])
    assert x.shape == (2, 20, 32, 32, 1)
    assert y["masks"].shape == (2, 4, 32, 32) and y["traces"].shape == (2, 20, 4)
    assert y["clean"].shape == y["attention"].shape == (2, 20, 32, 32)


def test_scores_count_false_positives_on_empty_patches() -> None:
    active, empty = _sample(2, "active"), _sample(0, "empty")
    masks = np.zeros((2, 4, 32, 32), np.float32)
    masks[0] = active.targets.masks
    masks[1, 0, :10, :10] = 1.0  # a hallucinated neuron on the empty patch
    traces = np.stack([active.targets.traces[2:-2], np.zeros((16, 4), np.float32)])
    score = score_patches([active, empty], PatchOutputs(masks=masks, traces=traces))
    n = active.targets.cells.size
    assert score["recall"] == 1.0 and score["precision"] == n / (n + 1)
    assert score["fp_per_empty"] == 1.0 and score["empty_with_fp"] == 1.0
    assert score["dice"] == 1.0
