"""Rigid motion correction: cross-correlation of each frame with one reference image."""

from __future__ import annotations

import numpy as np
from scipy import fft
from skimage.registration import phase_cross_correlation

from model.inference.params import MotionParams
from model.inference.scaling import sample_indices
from model.inference.source import read_frames
from model.rigid import sample_shifted

FFT_BLOCK = 4  # frames transformed together: small arrays are reused by malloc, large ones fault
# their pages in afresh each time (4 frames: 2.6 ms per 512 x 512 frame here, 32 frames: 7 ms)


def reference_image(movie, *, params: MotionParams) -> np.ndarray:
    """Mean of evenly spaced frames, float32 ``(H, W)``: the target every frame is aligned to."""
    idx = sample_indices(movie.shape[0], params.reference_frames)
    total = np.zeros(movie.shape[1:], dtype=np.float64)
    for frame in read_frames(movie, idx):
        total += frame
    return (total / len(idx)).astype(np.float32)


def _lags(n: int, max_shift: int) -> np.ndarray:
    """Indices of the circular lags ``-max_shift .. max_shift`` on an axis of length ``n``."""
    m = min(max_shift, (n - 1) // 2)
    return np.arange(-m, m + 1) % n


def significance_threshold(n_pixels: int, max_shift: int) -> float:
    """How much better than no shift (correlation coefficient) the best shift must match.

    For a frame that shares no structure with the reference (pure noise: e.g. an unstructured
    background while no cell is active), the coefficient at each of the ``M = (2 max_shift + 1)^2``
    tried shifts is about normal with standard deviation ``1 / sqrt(n_pixels)``, and the best of
    them reaches about ``sqrt(2 ln M) / sqrt(n_pixels)``; the same holds for a frame whose only
    structure matches the reference equally well at several shifts (one active cell among
    look-alike cells). The best shift must beat staying in place (or 0, when the coefficient there
    is negative) by 3 such deviations more, or the frame is left in place: otherwise such frames
    get random shifts up to ``max_shift``.
    """
    tried = (2 * max_shift + 1) ** 2
    return float((np.sqrt(2.0 * np.log(max(tried, 2))) + 3.0) / np.sqrt(n_pixels))


def estimate_shifts(frames: np.ndarray, reference: np.ndarray, *,
                    params: MotionParams) -> np.ndarray:
    """Shift ``(dy, dx)`` that aligns each frame to the reference.

    The cross-correlation of the mean-free frame with the mean-free reference is searched for its
    peak within ``max_shift`` pixels; the peak's correlation coefficient must beat the one at no
    shift by :func:`significance_threshold`, or the frame is not moved (shift 0). With
    ``upsample`` > 1 the peak is refined by :func:`skimage.registration.phase_cross_correlation`
    (kept when it stays within a pixel of the integer peak).

    Parameters
    ----------
    frames : ndarray, shape (t, H, W)
    reference : ndarray, shape (H, W)
    params : MotionParams

    Returns
    -------
    ndarray, shape (t, 2), float64
        Shifts in pixels, at most ``params.max_shift`` in each direction; ``ndimage.shift(frame,
        shift)`` moves the frame onto the reference.
    """
    shifts = np.zeros((frames.shape[0], 2), dtype=np.float64)
    if params.max_shift == 0:
        return shifts
    h, w = reference.shape
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref - ref.mean()
    ref_norm = np.sqrt(np.sum(ref * ref))
    if ref_norm == 0:
        return shifts
    ref_fft = fft.rfft2(ref)
    ly, lx = _lags(h, params.max_shift), _lags(w, params.max_shift)
    threshold = significance_threshold(h * w, params.max_shift)
    ref_full_fft = np.fft.fft2(ref) if params.upsample > 1 else None
    for first in range(0, frames.shape[0], FFT_BLOCK):
        f = np.asarray(frames[first:first + FFT_BLOCK], dtype=np.float64)
        f = f - f.mean(axis=(1, 2), keepdims=True)
        norms = np.sqrt(np.einsum("tyx,tyx->t", f, f)) * ref_norm
        f_fft = fft.rfft2(f, workers=-1)
        cc = fft.irfft2(ref_fft * np.conj(f_fft), s=(h, w), workers=-1)[:, ly][:, :, lx]
        for j, (c, norm) in enumerate(zip(cc, norms, strict=True)):
            if norm == 0:
                continue
            c = c / norm
            iy, ix = np.unravel_index(int(np.argmax(c)), c.shape)
            if c[iy, ix] - max(float(c[0, 0]), 0.0) < threshold:
                continue  # no better than staying in place, beyond what noise gives
            best = np.array([ly[iy] if ly[iy] <= h // 2 else ly[iy] - h,
                             lx[ix] if lx[ix] <= w // 2 else lx[ix] - w], dtype=np.float64)
            if params.upsample > 1:
                fine, _, _ = phase_cross_correlation(
                    ref_full_fft, np.fft.fft2(f[j]), upsample_factor=params.upsample,
                    space="fourier", normalization=None,
                )
                if np.all(np.abs(fine - best) <= 1.0):
                    best = fine
            shifts[first + j] = best
    return np.clip(shifts, -params.max_shift, params.max_shift)


def apply_shifts(frames: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """New float32 array with each frame moved by its shift (``ndimage.shift``'s sense: bilinear,
    edges filled by the nearest pixel; :func:`model.rigid.sample_shifted`)."""
    out = np.empty(frames.shape, dtype=np.float32)
    for i, (frame, shift) in enumerate(zip(frames, shifts, strict=True)):
        if not np.any(shift):
            out[i] = frame  # in place already (most frames of a registered movie)
        else:
            out[i] = sample_shifted(frame, -shift[0], -shift[1])
    return out


def correct(frames: np.ndarray, reference: np.ndarray, *, params: MotionParams) -> np.ndarray:
    """Estimate and apply rigid shifts; returns a new float32 ``(t, H, W)`` array."""
    return apply_shifts(frames, estimate_shifts(frames, reference, params=params))
