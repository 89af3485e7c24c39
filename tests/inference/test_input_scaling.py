"""The model card's ``input_scaling`` decides what the network sees (no TensorFlow needed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from model.inference import InferenceParams, prepare, process_movie
from model.inference.engine import compute_chunk
from model.inference.params import MotionParams, PlanParams, ScalingParams
from model.inference.source import as_movie

CARD = {"name": "fake", "version": "0", "T": 20, "H": 16, "W": 16, "N": 2, "trace_offset": 2}


class RecordingPredictor:
    """Returns empty outputs and keeps every batch it was given."""

    def __init__(self, input_scaling: str | None) -> None:
        self.card = dict(CARD, input_scaling=input_scaling) if input_scaling else dict(CARD)
        self.batches: list[np.ndarray] = []

    def predict(self, patches: np.ndarray):
        self.batches.append(patches.copy())
        b, t, h, w = patches.shape
        n = self.card["N"]
        return SimpleNamespace(
            denoised=np.zeros((b, t, h, w), np.float32),
            attention=np.zeros((b, t, h, w), np.float32),
            footprints=np.zeros((b, n, h, w), np.float32),
            raw_footprints=np.zeros((b, n, h, w), np.float32),
            traces=np.zeros((b, n, t - 4), np.float32))


def movie():
    rng = np.random.default_rng(0)
    data = 100.0 + rng.random((30, 32, 32)) * 10.0
    data[:, :16, :16] += 200.0  # one bright quadrant: per-patch min-max would hide the difference
    return data.astype(np.float32)


PARAMS = InferenceParams(motion=MotionParams(enabled=False), plan=PlanParams(window_overlap=4),
                         scaling=ScalingParams(spatial_sigma=0.0, background_level=0.35))


def first_chunk_input(tmp_path, mode):
    predictor = RecordingPredictor(mode)
    plan = prepare(movie(), predictor.card, work_dir=tmp_path, params=PARAMS)
    compute_chunk(as_movie(movie()), predictor, plan, plan.chunks[0].id)
    return np.concatenate(predictor.batches)


def test_movie_range_card_feeds_one_map_for_the_whole_movie(tmp_path):
    x = first_chunk_input(tmp_path, "movie-range")
    assert x.min() >= 0.35 - 1e-6 and x.max() <= 1.0
    bright, dim = x[0].mean(), x[-1].mean()  # tile (0, 0) holds the bright quadrant
    assert bright > 0.9 and dim < 0.45  # a dim patch stays dim


def test_minmax_card_stretches_every_patch(tmp_path):
    x = first_chunk_input(tmp_path, "minmax-per-patch")
    for patch in x:
        assert patch.min() == 0.0


def test_card_without_input_scaling_is_minmax(tmp_path):
    np.testing.assert_array_equal(first_chunk_input(tmp_path / "a", None),
                                  first_chunk_input(tmp_path / "b", "minmax-per-patch"))


def test_unknown_input_scaling_in_the_card_is_refused_before_any_work(tmp_path):
    predictor = RecordingPredictor("zscore")
    with pytest.raises(ValueError, match="unknown input_scaling 'zscore'"):
        process_movie(movie(), predictor, output=tmp_path / "r.zarr", params=PARAMS)
    assert predictor.batches == []
