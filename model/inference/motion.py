"""Rigid motion correction: phase correlation of each frame against one reference image."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from model.inference.params import MotionParams
from model.inference.scaling import sample_indices


def reference_image(movie, *, params: MotionParams) -> np.ndarray:
    """Mean of evenly spaced frames, float32 ``(H, W)``: the target every frame is aligned to."""
    idx = sample_indices(movie.shape[0], params.reference_frames)
    total = np.zeros(movie.shape[1:], dtype=np.float64)
    for t in idx:
        total += movie.read(int(t), int(t) + 1)[0]
    return (total / len(idx)).astype(np.float32)


def estimate_shifts(frames: np.ndarray, reference: np.ndarray, *,
                    params: MotionParams) -> np.ndarray:
    """Shift ``(dy, dx)`` that aligns each frame to the reference.

    Parameters
    ----------
    frames : ndarray, shape (t, H, W)
    reference : ndarray, shape (H, W)
    params : MotionParams

    Returns
    -------
    ndarray, shape (t, 2), float64
        Shifts in pixels, clipped to ``params.max_shift``.
    """
    shifts = np.zeros((frames.shape[0], 2), dtype=np.float64)
    ref_fft = np.fft.fft2(reference)
    for i, frame in enumerate(frames):
        shift, _, _ = phase_cross_correlation(
            ref_fft, np.fft.fft2(frame), upsample_factor=params.upsample, space="fourier",
            normalization=None,
        )
        shifts[i] = shift
    return np.clip(shifts, -params.max_shift, params.max_shift)


def apply_shifts(frames: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """New float32 array with each frame moved by its shift (edges filled by the nearest pixel)."""
    out = np.empty(frames.shape, dtype=np.float32)
    for i, (frame, shift) in enumerate(zip(frames, shifts, strict=True)):
        if np.all(shift == np.round(shift)):
            out[i] = ndimage.shift(frame.astype(np.float32), shift, order=0, mode="nearest")
        else:
            out[i] = ndimage.shift(frame.astype(np.float32), shift, order=1, mode="nearest")
    return out


def correct(frames: np.ndarray, reference: np.ndarray, *, params: MotionParams) -> np.ndarray:
    """Estimate and apply rigid shifts; returns a new float32 ``(t, H, W)`` array."""
    return apply_shifts(frames, estimate_shifts(frames, reference, params=params))
