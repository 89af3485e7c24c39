"""Scaling, motion correction and the array adapter."""

import numpy as np
import pytest

from model.inference.motion import apply_shifts, estimate_shifts
from model.inference.params import MotionParams, PlanParams, ScalingParams
from model.inference.scaling import (
    SUBSAMPLE_SIZE,
    level_patches,
    minmax_patches,
    movie_range,
    percentiles,
    scale_block,
    scale_patches,
)
from model.inference.source import ArrayMovie, as_movie


def test_constant_and_nan_movies_are_refused_clearly():
    with pytest.raises(ValueError, match="constant"):
        movie_range(ArrayMovie(np.full((20, 8, 8), 7.0)), params=ScalingParams())
    bad = np.ones((20, 8, 8))
    bad[3, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        movie_range(ArrayMovie(bad), params=ScalingParams(sample_frames=20))


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.float64])
def test_percentiles_in_the_sample_dtype_equal_numpys_in_float64(dtype):
    rng = np.random.default_rng(3)
    for size in (1, 2, 7, 1000):
        sample = (rng.gamma(2.0, 60.0, size=size) - 20).astype(dtype)
        q = [0.0, 1.0, 37.3, 99.9, 100.0]
        expected = np.percentile(sample.astype(np.float64), q)
        np.testing.assert_array_equal(percentiles(sample, q), expected)
        kept = sample.copy()
        np.testing.assert_array_equal(percentiles(kept, q, overwrite=True), expected)
        np.testing.assert_array_equal(np.sort(kept), np.sort(sample))  # reordered only


@pytest.mark.parametrize("kind", ["ties", "float", "periodic"])
def test_percentiles_of_large_samples_equal_numpys_whether_or_not_the_subsample_misleads(kind):
    rng = np.random.default_rng(5)
    n = 3 * SUBSAMPLE_SIZE + 17
    if kind == "ties":  # uint16 camera counts: many equal values around each percentile
        sample = rng.poisson(120, n).astype(np.uint16)
    elif kind == "float":
        sample = rng.gamma(2.0, 50.0, n).astype(np.float32)
    else:  # the strided subsample sees one phase only: its bounds miss, the counts tell
        sample = np.resize(np.arange(n // SUBSAMPLE_SIZE, dtype=np.float32)[::-1], n)
    q = [0.0, 1.0, 50.0, 99.9, 100.0]
    expected = np.percentile(sample.astype(np.float64), q)
    np.testing.assert_array_equal(percentiles(sample, q), expected)
    np.testing.assert_array_equal(percentiles(sample.copy(), q, overwrite=True), expected)


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


def test_frames_without_shared_structure_stay_in_place():
    rng = np.random.default_rng(2)
    noise = rng.poisson(20, (50, 48, 48)).astype(np.float32)
    other = rng.poisson(20, (48, 48)).astype(np.float32)
    assert not estimate_shifts(noise, other, params=MotionParams()).any()
    # flat background, three cells without resting brightness flashing at their own times (the
    # service tests' movie): a frame with one active cell matches the mean image about as well
    # when moved onto another cell, which used to give shifts up to max_shift in 30 of 120 frames
    yy, xx = np.mgrid[:48, :48]
    movie = rng.poisson(20, (120, 48, 48)).astype(np.float32)
    kernel = np.exp(-np.arange(20) / 5.0)
    for cy, cx in ((12, 12), (30, 32), (36, 9)):
        spikes = np.zeros(120)
        spikes[rng.integers(0, 110, 6)] = 1.0
        activity = np.convolve(spikes, kernel)[:120]
        movie += 200.0 * activity[:, None, None] * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 20)
    shifts = estimate_shifts(movie, movie.mean(axis=0), params=MotionParams())
    assert np.abs(shifts).max() <= 1.0


def test_large_and_subpixel_shifts_of_a_noisy_structured_frame_are_recovered():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:64, :64]
    reference = (np.sin(yy / 5.0) * np.cos(xx / 7.0) + 0.5 * np.sin((yy + xx) / 3.0)) * 50 + 200
    moved = np.roll(reference, (-9, 12), axis=(0, 1)) + rng.normal(0, 10, (64, 64))
    shifts = estimate_shifts(moved[None], reference, params=MotionParams())
    np.testing.assert_allclose(shifts[0], [9, -12])
    fine = estimate_shifts(moved[None], reference, params=MotionParams(upsample=10))
    np.testing.assert_allclose(fine[0], [9, -12], atol=0.15)


def test_array_adapter_reads_blocks_and_refuses_wrong_dimensions():
    data = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    movie = as_movie(data)
    assert movie.read(0, 1, y=slice(1, 3)).shape == (1, 2, 4)
    with pytest.raises(ValueError, match="3 dimensions"):
        as_movie(np.zeros((4, 4)))


def test_movie_range_scaling_maps_the_percentiles_to_the_configured_levels():
    rng = np.random.default_rng(2)
    raw = 100.0 + 50.0 * rng.random((40, 8, 8))
    params = ScalingParams(sample_frames=40, background_level=0.3, peak_level=0.9)
    rng_ = movie_range(ArrayMovie(raw), params=params)
    low, high = np.percentile(raw, [params.low_percentile, params.high_percentile])
    probe = np.array([low, high, (low + high) / 2, low - 10.0, high + 10.0]).reshape(1, 5, 1, 1)
    scaled, span = scale_patches(scale_block(probe, rng_), mode="movie-range", params=params)
    np.testing.assert_allclose(scaled.ravel(), [0.3, 0.9, 0.6, 0.3, 0.9], atol=1e-5)
    assert span[0] == pytest.approx(1 / 0.6)
    # the same map for every patch: a dim patch stays dim, a bright one bright
    patches = np.stack([np.full((2, 4, 4), 0.1), np.full((2, 4, 4), 0.8)]).astype(np.float32)
    scaled, span = level_patches(patches, background=0.35, peak=1.0)
    np.testing.assert_allclose(scaled[:, 0, 0, 0], [0.35 + 0.065, 0.35 + 0.52], atol=1e-6)
    np.testing.assert_allclose(span, [1 / 0.65, 1 / 0.65], rtol=1e-6)
    # span returns network units to movie-range units
    np.testing.assert_allclose((scaled - 0.35) * span[:, None, None, None], patches, atol=1e-6)


def test_minmax_per_patch_mode_is_the_per_patch_minmax():
    rng = np.random.default_rng(3)
    patches = rng.random((3, 4, 8, 8)).astype(np.float32) * 0.6
    params = ScalingParams(min_patch_range=0.25)
    scaled, span = scale_patches(patches, mode="minmax-per-patch", params=params)
    expected, expected_span = minmax_patches(patches, min_range=0.25)
    np.testing.assert_array_equal(scaled, expected)
    np.testing.assert_array_equal(span, expected_span)



@pytest.mark.parametrize("mode", ["movie-range", "minmax-per-patch"])
def test_patches_scaled_in_place_are_the_same_bits(mode):
    rng = np.random.default_rng(4)
    patches = (rng.random((5, 6, 8, 8)) * 1.4 - 0.2).astype(np.float32)  # some out of range
    params = ScalingParams(min_patch_range=0.25, background_level=0.3, peak_level=0.9)
    expected, expected_span = scale_patches(patches, mode=mode, params=params)
    work = patches.copy()
    scaled, span = scale_patches(work, mode=mode, params=params, out=work)
    assert scaled is work and np.array_equal(scaled, expected)
    assert np.array_equal(span, expected_span)
    assert not np.array_equal(patches, work)  # the copying call left its input as it was

def test_unknown_input_scaling_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown input_scaling 'zscore'.*movie-range"):
        scale_patches(np.zeros((1, 2, 4, 4), np.float32), mode="zscore", params=ScalingParams())
    with pytest.raises(ValueError, match="background_level must be below peak_level"):
        ScalingParams(background_level=0.9, peak_level=0.5)


@pytest.mark.parametrize(("motion_on", "parts"), [(False, 4), (True, 4), (True, 12)])
def test_a_block_read_as_parts_in_a_pool_is_the_same_block(motion_on, parts):
    """Frames read and prepared as several ranges at once (first and last windows padded in
    time, edge tiles in space; 4 parts, or one per reading thread of a GPU host) give the block
    read in one piece, bit for bit."""
    from concurrent.futures import ThreadPoolExecutor

    from model.inference.patches import read_block
    from model.inference.plan import make_plan

    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:40, :44]
    scene = sum(300 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
                for cy, cx in ((10, 12), (25, 30), (30, 8), (12, 35)))
    movie = (scene + rng.gamma(3.0, 10.0, (150, 40, 44))).astype(np.float32)
    movie[::4] = np.roll(movie[::4], 2, axis=1)  # every fourth frame 2 px down
    plan = make_plan(movie.shape, patch=(100, 32, 32), trace_offset=2,
                     params=PlanParams(window_overlap=20), movie_low=0.0, movie_high=400.0)
    reference = movie.mean(axis=0) if motion_on else None
    with ThreadPoolExecutor(3) as pool:
        for window in range(len(plan.windows)):
            tiles = tuple(plan.tiles)
            whole = read_block(ArrayMovie(movie), plan, window, tiles, reference=reference,
                               motion_params=MotionParams(max_shift=4), sigma=1.0)
            parted = read_block(ArrayMovie(movie), plan, window, tiles, reference=reference,
                                motion_params=MotionParams(max_shift=4), sigma=1.0, pool=pool,
                                parts=parts)
            np.testing.assert_array_equal(parted.data, whole.data)
            assert (parted.shifts is None) == (not motion_on)
            if motion_on:
                np.testing.assert_array_equal(parted.shifts, whole.shifts)
                assert parted.shifts.any()
