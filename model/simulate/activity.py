"""Spike trains and indicator fluorescence (dF/F) of each cell."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from model.simulate.params import Indicator, SimulationParams

#: Seconds of activity simulated before frame 0 (then dropped), so the movie starts at steady state.
WARMUP_DECAYS = 4.0


@dataclass(frozen=True)
class Activity:
    """Activity of K cells over T frames.

    Attributes
    ----------
    spikes : ndarray, shape (K, T), uint16
        Spikes per frame (0 everywhere for silent cells).
    dff : ndarray, shape (K, T), float32
        Noise-free fluorescence change dF/F of each cell (0 at rest).
    rates_hz : ndarray, shape (K,), float64
        Poisson rate of each cell (0 for silent cells).
    silent : ndarray, shape (K,), bool
        Cells that never spike.
    """

    spikes: np.ndarray
    dff: np.ndarray
    rates_hz: np.ndarray
    silent: np.ndarray


def simulate_activity(count: int, params: SimulationParams,
                      rng: np.random.Generator) -> Activity:
    """Draw spike trains (Poisson plus bursts) and turn them into dF/F traces.

    Parameters
    ----------
    count : int
        Number of cells K.
    params : SimulationParams
        Frame rate, frames, firing and burst settings, indicator, amplitude spread.
    rng : numpy.random.Generator

    Returns
    -------
    Activity
    """
    fps, frames = params.fps, params.frames
    kin = params.kinetics
    warm = int(np.ceil(WARMUP_DECAYS * kin.decay_s * fps))
    total = frames + warm
    silent = rng.random(count) < params.silent_fraction
    lo, hi = np.log(params.rate_hz[0]), np.log(max(params.rate_hz[1], params.rate_hz[0]))
    rates = np.where(silent, 0.0, np.exp(rng.uniform(lo, hi, count)))
    spikes = rng.poisson(rates[:, None] / fps, (count, total)).astype(np.int64)
    _add_bursts(spikes, ~silent, params, rng)
    gains = rng.lognormal(0.0, params.amplitude_spread, count) if count else np.zeros(0)
    dff = indicator_response(spikes, kin, fps) * gains[:, None]
    return Activity(spikes=spikes[:, warm:].astype(np.uint16),
                    dff=dff[:, warm:].astype(np.float32),
                    rates_hz=rates, silent=silent)


def _add_bursts(spikes: np.ndarray, active: np.ndarray, params: SimulationParams,
                rng: np.random.Generator) -> None:
    """Add bursts (several spikes within ``burst_duration_s``) to active cells, in place."""
    count, total = spikes.shape
    n_bursts = rng.poisson(params.burst_rate_hz * total / params.fps, count) * active
    span = max(round(params.burst_duration_s * params.fps), 1)
    lo, hi = params.burst_spikes
    for cell in np.flatnonzero(n_bursts):
        starts = rng.integers(0, total, n_bursts[cell])
        sizes = rng.integers(lo, hi + 1, n_bursts[cell])
        frames = np.concatenate([s + rng.integers(0, span, n) for s, n in zip(starts, sizes,
                                                                             strict=True)])
        np.add.at(spikes[cell], np.minimum(frames, total - 1), 1)


def calcium_kernel(kin: Indicator, fps: float, length: int) -> np.ndarray:
    """Calcium transient of one spike, sampled at frame centres, peak 1.

    Returns
    -------
    ndarray, shape (length,)
        ``exp(-t/decay) - exp(-t/rise)`` at ``t = (n + 0.5) / fps``, divided by its maximum.
    """
    t = (np.arange(length) + 0.5) / fps
    return (np.exp(-t / kin.decay_s) - np.exp(-t / kin.rise_s)) / _kernel_peak(kin, fps)


def indicator_response(spikes: np.ndarray, kin: Indicator, fps: float) -> np.ndarray:
    """dF/F of spike trains: double-exponential calcium, then a saturating nonlinearity.

    Parameters
    ----------
    spikes : ndarray, shape (K, T)
        Spikes per frame.
    kin : Indicator
    fps : float
        Frame rate in Hz.

    Returns
    -------
    ndarray, shape (K, T), float64
        ``dff_max * (1 - exp(-c * dff_1ap / dff_max))`` with ``c`` the summed calcium transients
        (each peaking at 1).
    """
    gd, gr = np.exp(-1.0 / (fps * kin.decay_s)), np.exp(-1.0 / (fps * kin.rise_s))
    s = spikes.astype(np.float64)
    calcium = (lfilter([np.sqrt(gd)], [1.0, -gd], s, axis=-1)
               - lfilter([np.sqrt(gr)], [1.0, -gr], s, axis=-1))
    calcium /= _kernel_peak(kin, fps)
    return kin.dff_max * (1.0 - np.exp(-calcium * kin.dff_1ap / kin.dff_max))


def _kernel_peak(kin: Indicator, fps: float) -> float:
    """Largest sample of the unnormalised calcium kernel."""
    t = (np.arange(int(3 * fps * (kin.rise_s + kin.decay_s)) + 4) + 0.5) / fps
    return float((np.exp(-t / kin.decay_s) - np.exp(-t / kin.rise_s)).max())
