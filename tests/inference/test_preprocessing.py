"""Scaling, motion correction and the array adapter."""

import numpy as np
import pytest

from model.inference.motion import apply_shifts, estimate_shifts
from model.inference.params import MotionParams, ScalingParams
from model.inference.scaling import minmax_patches, movie_range
from model.inference.source import ArrayMovie, as_movie


def test_constant_and_nan_movies_are_refused_clearly():
    with pytest.raises(ValueError, match="constant"):
        movie_range(ArrayMovie(np.full((20, 8, 8), 7.0)), params=ScalingParams())
    bad = np.ones((20, 8, 8))
    bad[3, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        movie_range(ArrayMovie(bad), params=ScalingParams(sample_frames=20))


def test_minmax_patches_floor_keeps_flat_patches_flat():
    rng = np.random.default_rng(0)
    flat = 0.5 + 0.01 * rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    scaled, span = minmax_patches(flat, min_range=0.25)
    assert span[0] == pytest.approx(0.25)
    assert scaled.max() < 0.5  # not stretched to [0, 1]
    busy = rng.random((1, 4, 8, 8)).astype(np.float32)
    scaled, _ = minmax_patches(busy, min_range=0.25)
    assert scaled.min() == 0.0 and scaled.max() == 1.0


def test_rigid_shift_is_recovered():
    rng = np.random.default_rng(1)
    reference = rng.random((48, 48)).astype(np.float32)
    moved = np.roll(reference, (3, -2), axis=(0, 1))[None]
    shifts = estimate_shifts(moved, reference, params=MotionParams())
    np.testing.assert_allclose(shifts[0], [-3, 2])
    fixed = apply_shifts(moved, shifts)
    np.testing.assert_allclose(fixed[0, 5:-5, 5:-5], reference[5:-5, 5:-5])


def test_array_adapter_reads_blocks_and_refuses_wrong_dimensions():
    data = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    movie = as_movie(data)
    assert movie.read(0, 1, y=slice(1, 3)).shape == (1, 2, 4)
    with pytest.raises(ValueError, match="3 dimensions"):
        as_movie(np.zeros((4, 4)))
