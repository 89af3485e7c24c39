"""Everything in the movie that is not a soma: neuropil, vessel shadows, bleaching, motion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter
from scipy.signal import lfilter

from model.rigid import sample_shifted
from model.simulate.params import SimulationParams

#: Number of independent slow neuropil fluctuation components (the first follows the population).
NEUROPIL_RANK = 3


@dataclass(frozen=True)
class Background:
    """Background components of an (H, W) x T movie.

    The neuropil at frame t is ``mean * max(1 + fluctuation * sum_j fields[j] * traces[j, t], 0)``.

    Attributes
    ----------
    neuropil_mean : ndarray, shape (H, W), float32
        Smooth neuropil brightness, mean about 1.
    neuropil_fields : ndarray, shape (J, H, W), float32
        Smooth spatial patterns of the fluctuations (unit variance).
    neuropil_traces : ndarray, shape (J, T), float32
        Slow fluctuation time courses (unit variance).
    vessel : ndarray, shape (H, W), float32
        Light transmission of the vessel shadows (1: no vessel).
    bleach : ndarray, shape (T,), float32
        Photobleaching factor per frame (1 at frame 0).
    shifts : ndarray, shape (T, 2), float32
        Rigid shift (dy, dx) in pixels: frame t shows the reference at (y + dy, x + dx).
    """

    neuropil_mean: np.ndarray
    neuropil_fields: np.ndarray
    neuropil_traces: np.ndarray
    vessel: np.ndarray
    bleach: np.ndarray
    shifts: np.ndarray

    def neuropil(self, t0: int, t1: int, fluctuation: float) -> np.ndarray:
        """Neuropil of frames ``t0:t1``, shape (t1 - t0, H, W), float32."""
        j, h, w = self.neuropil_fields.shape
        mod = self.neuropil_traces[:, t0:t1].T @ self.neuropil_fields.reshape(j, h * w)
        mod = np.maximum(1.0 + np.float32(fluctuation) * mod, 0.0)
        return (mod.reshape(-1, h, w) * self.neuropil_mean).astype(np.float32, copy=False)


def smooth_field(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise with unit variance (independent of the field's size)."""
    white = rng.standard_normal(shape)
    return gaussian_filter(white, sigma_px, mode="wrap") * np.sqrt(4 * np.pi) * sigma_px


def slow_noise(frames: int, tau_frames: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary AR(1) noise with time constant ``tau_frames`` and unit variance, shape (T,)."""
    a = np.exp(-1.0 / max(tau_frames, 1e-6))
    start = rng.standard_normal()
    e = rng.standard_normal(frames)
    return lfilter([np.sqrt(1 - a * a)], [1.0, -a], e, zi=[a * start])[0]


def make_vessels(params: SimulationParams, rng: np.random.Generator) -> np.ndarray:
    """Transmission map (H, W) of smoothly curving vessels crossing the field of view."""
    h, w, px = params.height, params.width, params.pixel_size_um
    area = h * w * px * px / 512.0**2
    n = int(rng.poisson(params.vessels * area))
    out = np.ones((h, w))
    for _ in range(n):
        line = np.ones((h, w), bool)
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        heading, turn = rng.uniform(0, 2 * np.pi), rng.normal(0, 0.01)
        for direction in (0.0, np.pi):
            yy, xx, hd = y, x, heading + direction
            for _ in range(2 * (h + w)):
                yi, xi = int(yy), int(xx)
                if not (0 <= yi < h and 0 <= xi < w):
                    break
                line[yi, xi] = False
                hd += turn + rng.normal(0, 0.02)
                yy, xx = yy + np.sin(hd), xx + np.cos(hd)
        dist = distance_transform_edt(line)
        half = rng.uniform(*params.vessel_width_um) / px / 2
        depth = rng.uniform(*params.vessel_depth)
        out *= 1.0 - depth / (1.0 + np.exp(np.clip((dist - half) / 0.7, -50, 50)))
    return out.astype(np.float32)


def make_shifts(params: SimulationParams, rng: np.random.Generator) -> np.ndarray:
    """Rigid shifts (T, 2) in pixels: AR(1) with 0.5 s time constant, sigma ``motion_um``."""
    if params.motion_um <= 0:
        return np.zeros((params.frames, 2), np.float32)
    sigma = params.motion_um / params.pixel_size_um
    tau = 0.5 * params.fps
    return np.column_stack([slow_noise(params.frames, tau, rng) * sigma for _ in range(2)]
                           ).astype(np.float32)


def make_background(params: SimulationParams, rng: np.random.Generator,
                    population: np.ndarray | None, vessel: np.ndarray) -> Background:
    """Draw the neuropil, vessels, bleaching curve and motion of a movie.

    Parameters
    ----------
    params : SimulationParams
    rng : numpy.random.Generator
    population : ndarray, shape (T,), or None
        Mean dF/F of the cells; the first neuropil component follows it (half its variance).
    vessel : ndarray, shape (H, W)
        Vessel transmission from :func:`make_vessels`.

    Returns
    -------
    Background
    """
    h, w, t = params.height, params.width, params.frames
    sigma = params.neuropil_scale_um / params.pixel_size_um
    mean = 1.0 + params.neuropil_contrast * np.clip(smooth_field((h, w), sigma, rng), -3, 3) / 3
    fields = np.stack([smooth_field((h, w), sigma, rng) for _ in range(NEUROPIL_RANK)])
    tau = params.neuropil_timescale_s * params.fps
    traces = np.stack([slow_noise(t, tau, rng) for _ in range(NEUROPIL_RANK)])
    if population is not None and population.std() > 0:
        pop = (population - population.mean()) / population.std()
        traces[0] = (traces[0] + pop) / np.sqrt(2.0)
    k = np.arange(t) / (params.fps * params.bleach_tau_s)
    bleach = 1.0 - params.bleach_fraction * (1.0 - np.exp(-k))
    return Background(neuropil_mean=mean.astype(np.float32),
                      neuropil_fields=(fields / np.sqrt(NEUROPIL_RANK)).astype(np.float32),
                      neuropil_traces=traces.astype(np.float32),
                      vessel=vessel, bleach=bleach.astype(np.float32),
                      shifts=make_shifts(params, rng))


def apply_shifts(frames: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shift each frame rigidly by bilinear interpolation, edges clamped.

    Parameters
    ----------
    frames : ndarray, shape (t, H, W)
    shifts : ndarray, shape (t, 2)
        (dy, dx) in pixels; output[i, y, x] = frames[i, y + dy, x + dx].

    Returns
    -------
    ndarray, shape (t, H, W), same dtype
    """
    if not np.any(shifts):
        return frames
    out = np.empty_like(frames)
    for i, (dy, dx) in enumerate(shifts):
        out[i] = sample_shifted(frames[i], dy, dx)
    return out
