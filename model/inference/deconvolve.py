"""Denoised calcium and inferred spikes of each neuron, by OASIS deconvolution.

The neuropil-corrected fluorescence ``F - coefficient * Fneu`` carries the photon noise of every
frame. OASIS (Friedrich, Zhou & Paninski 2017, PLoS Comput Biol 13:e1005423; package
``oasis-deconv``) fits each trace with an autoregressive AR(1) calcium model driven by sparse,
non-negative spikes, the noise level estimated from the trace's power spectrum. The AR
coefficient (the calcium decay per frame) belongs to the indicator and the frame rate, so every
cell of a movie shares it: each trace's autocovariance gives an estimate, noisy traces scatter
(0.1-0.97 where the decay is 0.92, on simulated movies), and the traces are fitted again with
the median of those estimates (:data:`MIN_TRACES_FOR_SHARED_DECAY` or more traces; fewer keep
their own). Nothing depends on the indicator named by the user. Its
fitted calcium ``c`` is the denoised trace (CaImAn's ``C``), its spikes ``s`` the deconvolved
activity (Suite2p's ``spks``), both without the baseline.

``oasis-deconv`` is GPL-3.0 licensed and therefore an optional extra (``pip install
'caimx[deconvolution]'``; the development setup and the worker image include it). Without it,
results simply have no ``calcium`` and ``spikes`` arrays.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import warnings
from typing import Any

import numpy as np


def available() -> bool:
    """Whether ``oasis-deconv`` is installed."""
    return importlib.util.find_spec("oasis") is not None


def preload() -> None:
    """Import OASIS ahead of its first use (with the parts of SciPy it pulls in, 0.4 s that
    would otherwise come after a movie's last chunk); nothing when it is not installed."""
    if available():
        import oasis.functions  # noqa: F401


#: Fewest fitted traces whose median AR coefficient is shared by all traces of a movie.
MIN_TRACES_FOR_SHARED_DECAY = 5


def deconvolve_traces(traces: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(calcium, spikes, info)`` of ``traces`` ``(K, T)``, one neuron at a time.

    A trace that is constant, not finite everywhere, or that OASIS cannot fit gets zeros in both
    outputs; ``info["failed"]`` counts them. ``info["ar_coefficient_median"]`` is the median of
    the traces' own AR(1) estimates (the calcium decay per frame), ``info["ar_coefficient"]``
    the one the fits used (that median, or ``"per trace"`` when too few traces could be fitted).
    """
    traces = np.asarray(traces)
    calcium = np.zeros(traces.shape, np.float32)
    spikes = np.zeros(traces.shape, np.float32)
    estimates = [_estimate(trace) for trace in traces]
    coefficients = np.array([e[0] if e is not None else np.nan for e in estimates])
    fitted = np.isfinite(coefficients)
    shared = None
    if fitted.sum() >= MIN_TRACES_FOR_SHARED_DECAY:
        shared = float(np.median(coefficients[fitted]))
    done = np.zeros(len(traces), bool)
    for k in np.flatnonzero(fitted):
        own, noise = estimates[k]
        fit = _fit(traces[k], shared, noise) if shared is not None else None
        if fit is None:  # too few traces to share a decay, or the shared one cannot be fitted
            fit = _fit(traces[k], own, noise)
        if fit is not None:
            calcium[k], spikes[k] = fit
            done[k] = True
    info = {
        "method": "OASIS AR(1), L1 penalty, noise-constrained, decay shared by the movie's cells",
        "package": f"oasis-deconv {importlib.metadata.version('oasis-deconv')}",
        "input": "fluorescence - coefficient * neuropil",
        "failed": int((~done).sum()),
        "ar_coefficient_median": (round(float(np.median(coefficients[fitted])), 6)
                                  if fitted.any() else None),
        "ar_coefficient": round(shared, 6) if shared is not None else "per trace",
    }
    return calcium, spikes, info


#: OASIS's fudge factor for an AR(1) coefficient it estimates itself (``deconvolve`` with
#: ``optimize_g=0``): the estimate is shrunk by it.
AR1_FUDGE_FACTOR = 0.98


def _usable(trace: np.ndarray) -> np.ndarray | None:
    y = np.asarray(trace, np.float64)
    if y.size < 4 or not np.isfinite(y).all() or np.ptp(y) == 0:
        return None
    return y


def _estimate(trace: np.ndarray) -> tuple[float, float] | None:
    """``(AR(1) coefficient, noise SD)`` of one trace as OASIS's ``deconvolve`` estimates them
    before it fits; ``None`` when the trace is constant or not finite or the estimate fails.

    Estimated once here and handed to every fit: the estimate (the noise from the trace's power
    spectrum) is about half of a fit's time."""
    from oasis.functions import estimate_parameters

    y = _usable(trace)
    if y is None:
        return None
    try:
        with warnings.catch_warnings():  # its noise spectrum warns on traces < 256 frames
            warnings.simplefilter("ignore", UserWarning)
            g, noise = estimate_parameters(y, p=1, fudge_factor=AR1_FUDGE_FACTOR)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError):
        return None
    g = float(np.ravel(g)[0])
    return (g, float(noise)) if np.isfinite(g) and np.isfinite(noise) else None


def _fit(trace: np.ndarray, decay: float, noise: float,
         ) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
    """``(calcium, spikes)`` of one trace with AR(1) coefficient ``decay`` and noise SD
    ``noise``; ``None`` when the trace is constant or not finite or OASIS fails."""
    from oasis.functions import deconvolve

    y = _usable(trace)
    if y is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # g=: its AR form of tau_d
            fit = deconvolve(y, penalty=1, g=(decay,), sn=noise)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError):
        return None
    c, s = np.asarray(fit.c), np.asarray(fit.s)
    if not (np.isfinite(c).all() and np.isfinite(s).all()):
        return None
    return c, np.maximum(s, 0)  # spikes: -1e-20 from rounding
