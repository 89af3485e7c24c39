"""Scoring: Hungarian matching on binarized footprints, IoU >= 0.5."""

import json

import numpy as np

from model.evaluate import evaluate, iou_matrix


def _disks(centers, shape=(48, 48), radius=5):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.array([(yy - y) ** 2 + (xx - x) ** 2 <= radius**2 for y, x in centers])


def test_ground_truth_against_itself_is_perfect():
    masks = _disks([(10, 10), (30, 12), (20, 35)])
    traces = np.random.default_rng(0).random((3, 50))
    score = evaluate(masks.astype(np.float32), masks, found_traces=traces, true_traces=traces)
    assert score.f1 == 1.0 and score.precision == 1.0 and score.recall == 1.0
    assert score.mean_iou == 1.0 and abs(score.trace_r - 1.0) < 1e-12
    json.dumps(score.to_dict())


def test_trace_r_leaves_out_cells_whose_true_trace_is_constant():
    masks = _disks([(10, 10), (30, 12), (20, 35)])
    rng = np.random.default_rng(1)
    true = rng.random((3, 60))
    true[1] = 0.0  # a silent cell: its true dF/F never moves
    found = true + 0.01 * rng.random((3, 60))
    found[2] = 1.0  # a varying true trace answered by a flat one counts as r = 0
    score = evaluate(masks.astype(np.float32), masks, found_traces=found, true_traces=true)
    assert score.n_matched == 3 and score.n_trace_pairs == 2
    assert abs(score.trace_r - (np.corrcoef(found[0], true[0])[0, 1] + 0.0) / 2) < 1e-9
    silent_only = evaluate(masks[1:2].astype(np.float32), masks[1:2], found_traces=found[1:2],
                           true_traces=true[1:2])
    assert silent_only.n_trace_pairs == 0 and np.isnan(silent_only.trace_r)


def test_misses_and_false_positives_count():
    true = _disks([(10, 10), (30, 12), (20, 35)])
    found = _disks([(10, 11), (40, 40)])  # one good match, one false positive
    score = evaluate(found.astype(np.float32), true)
    assert score.n_matched == 1
    assert score.precision == 0.5 and abs(score.recall - 1 / 3) < 1e-12
    assert abs(score.f1 - 0.4) < 1e-12


def test_low_iou_is_not_a_match():
    true = _disks([(20, 20)])
    found = _disks([(20, 27)])
    assert iou_matrix(found, true)[0, 0] < 0.5
    assert evaluate(found.astype(np.float32), true).n_matched == 0


def test_empty_inputs():
    empty = np.zeros((0, 16, 16), np.float32)
    assert evaluate(empty, empty.astype(bool)).f1 == 1.0
    assert evaluate(empty, _disks([(8, 8)], shape=(16, 16), radius=3)).recall == 0.0


def test_ignored_cells_are_neither_misses_nor_false_detections():
    true = _disks([(10, 10), (30, 12), (20, 35), (2, 45)])  # the last: a sliver at the edge
    found = _disks([(10, 11), (2, 45), (40, 40)])  # a match, the sliver, a false positive
    ignore = np.array([False, False, False, True])
    score = evaluate(found.astype(np.float32), true, ignore=ignore)
    assert (score.n_found, score.n_true, score.n_matched) == (2, 3, 1)
    assert (score.n_ignored_true, score.n_ignored_found) == (1, 1)
    assert score.precision == 0.5 and abs(score.recall - 1 / 3) < 1e-12
    # unfound, an ignored cell is simply not counted
    missed = evaluate(found[[0, 2]].astype(np.float32), true, ignore=ignore)
    assert (missed.n_found, missed.n_true, missed.n_ignored_found) == (2, 3, 0)
    everything = evaluate(found.astype(np.float32), true)
    assert (everything.n_found, everything.n_true, everything.n_matched) == (3, 4, 2)
