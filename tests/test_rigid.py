"""Rigid sub-pixel moves: the simulator's and motion correction's one implementation."""

import numpy as np
import pytest
from scipy import ndimage

from model.rigid import PixelSampler, sample_shifted


@pytest.mark.parametrize("shift", [(0.3, -0.7), (-2.5, 4.25), (3.0, -2.0), (0.0, 0.4),
                                   (-0.6, 0.0), (12.2, -10.7)])
def test_moves_match_scipy_shift_with_the_sign_turned(shift):
    frame = np.random.default_rng(4).gamma(2.0, 50.0, (40, 56)).astype(np.float32)
    moved = sample_shifted(frame, -shift[0], -shift[1])
    assert moved.dtype == np.float32 and moved.shape == frame.shape
    np.testing.assert_allclose(moved, ndimage.shift(frame, shift, order=1, mode="nearest"),
                               rtol=1e-5, atol=1e-3)


def test_integer_frames_come_back_as_float32_and_whole_steps_copy_pixels():
    frame = np.arange(30, dtype=np.uint16).reshape(5, 6)
    moved = sample_shifted(frame, 1, -2)
    assert moved.dtype == np.float32
    np.testing.assert_array_equal(moved[:4, 2:], frame[1:, :4])
    np.testing.assert_array_equal(moved[4], moved[3])  # the last row repeats past the edge
    np.testing.assert_array_equal(moved[:, 0], moved[:, 2])  # so does the first column
    assert not np.shares_memory(sample_shifted(frame.astype(np.float32), 0, 0), frame)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_frames_sampled_at_some_pixels_equal_moved_frames_bit_for_bit(dtype):
    rng = np.random.default_rng(1)
    frames = (rng.random((12, 40, 50)) * 1000).astype(dtype)
    pixels = np.sort(rng.choice(40 * 50, 500, replace=False))
    pixels[:3] = [0, 49, 40 * 50 - 1]  # corners: neighbours clamped to the edge
    dy, dx = rng.normal(0, 2, 12), rng.normal(0, 2, 12)
    dy[3] = dx[3] = 0.0  # in place
    dy[4], dx[5] = 1.0, -2.0  # whole pixels along one axis
    dy[6], dx[7] = 30.0, -45.3  # past the frame: edge pixels repeat
    sampler = PixelSampler((40, 50), pixels)
    found = sampler(frames, dy, dx)
    moved = np.stack([sample_shifted(f, a, b).ravel()[pixels]
                      for f, a, b in zip(frames, dy, dx, strict=True)])
    assert found.dtype == np.float32
    np.testing.assert_array_equal(found, moved)
    np.testing.assert_array_equal(sampler(frames[5:9], dy[5:9], dx[5:9]), moved[5:9])  # reused
    with pytest.raises(ValueError, match="not"):
        sampler(frames[:, :30], dy, dx)
