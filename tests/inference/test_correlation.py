"""The correlation image: cells that share a signal stand out, noise and drift do not."""

from __future__ import annotations

import numpy as np
import pytest

from model.inference.correlation import correlation_image, window_moments
from model.inference.params import ImageParams


def _disk(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _windows_image(frames: np.ndarray, window: int, *, bin_frames: int = 4,
                   size: int = 5) -> np.ndarray:  # fmt: skip
    moments = sum(window_moments(frames[t:t + window], bin_frames=bin_frames, size=size)
                  for t in range(0, len(frames), window))
    return correlation_image(moments)


def test_an_active_cell_stands_out_of_independent_noise():
    rng = np.random.default_rng(0)
    cell = _disk((40, 40), (20, 20), 6)
    signal = np.repeat(rng.random(60) < 0.2, 4).astype(np.float32)  # transients of 4 frames
    frames = rng.normal(0, 1, (240, 40, 40)).astype(np.float32)
    frames += 1.5 * signal[:, None, None] * cell
    image = _windows_image(frames, 80)
    inner = _disk((40, 40), (20, 20), 3)  # whole neighbourhood inside the cell
    assert image[inner].mean() > 0.6  # expected 0.76: signal variance 0.36, binned noise 0.25
    outside = ~_disk((40, 40), (20, 20), 10)
    assert abs(image[outside].mean()) < 0.05 and image[outside].max() < 0.4


def test_steps_between_windows_add_no_correlation():
    """Each window is centred on its own mean: a global brightness step between windows (a
    bleaching staircase, a laser power change) leaves independent pixels uncorrelated."""
    rng = np.random.default_rng(1)
    frames = rng.normal(0, 1, (240, 24, 24)).astype(np.float32)
    frames += np.repeat([0.0, 5.0, -3.0], 80)[:, None, None]
    assert abs(_windows_image(frames, 80).mean()) < 0.05
    assert _windows_image(frames, 240).mean() > 0.5  # one window: the steps are shared signal


def test_moments_add_over_space_and_time():
    """Cutting the frames into blocks (tiles with their neighbourhood) and windows changes nothing
    away from block edges: the engine's chunks give the image of the whole movie."""
    rng = np.random.default_rng(2)
    frames = rng.normal(0, 1, (160, 32, 48)).astype(np.float32)
    frames += np.repeat(rng.random(40), 4)[:, None, None] * _disk((32, 48), (16, 24), 8)
    whole = sum(window_moments(frames[t:t + 80], bin_frames=4, size=5) for t in (0, 80))
    left = sum(window_moments(frames[t:t + 80, :, :28], bin_frames=4, size=5) for t in (0, 80))
    np.testing.assert_allclose(left[:, :, :26], whole[:, :, :26], rtol=1e-4, atol=1e-4)


def test_too_few_frames_and_constant_pixels_give_zero():
    assert not window_moments(np.ones((7, 8, 8)), bin_frames=4, size=3).any()  # one bin only
    moments = window_moments(np.ones((16, 8, 8)), bin_frames=4, size=3)
    np.testing.assert_array_equal(correlation_image(moments), 0)


def test_neighbourhood_must_be_odd():
    with pytest.raises(ValueError, match="odd"):
        ImageParams(correlation_size=4)
