"""Denoised calcium and inferred spikes of each neuron, by OASIS deconvolution.

The neuropil-corrected fluorescence ``F - coefficient * Fneu`` carries the photon noise of every
frame. OASIS (Friedrich, Zhou & Paninski 2017, PLoS Comput Biol 13:e1005423; package
``oasis-deconv``) fits each trace with an autoregressive AR(1) calcium model driven by sparse,
non-negative spikes, the noise level estimated from the trace's power spectrum and the AR
coefficient from its autocovariance, so nothing depends on the indicator named by the user. Its
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


def deconvolve_traces(traces: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(calcium, spikes, info)`` of ``traces`` ``(K, T)``, one neuron at a time.

    A trace that is constant, not finite everywhere, or that OASIS cannot fit gets zeros in both
    outputs; ``info["failed"]`` counts them, ``info["ar_coefficient_median"]`` is the median of
    the fitted AR(1) coefficients (the calcium decay per frame).
    """
    from oasis.functions import deconvolve

    traces = np.asarray(traces)
    calcium = np.zeros(traces.shape, np.float32)
    spikes = np.zeros(traces.shape, np.float32)
    coefficients = np.full(traces.shape[0], np.nan)
    failed = 0
    for k, trace in enumerate(traces):
        y = np.asarray(trace, np.float64)
        if y.size < 4 or not np.isfinite(y).all() or np.ptp(y) == 0:
            failed += 1
            continue
        try:
            with warnings.catch_warnings():  # its noise spectrum warns on traces < 256 frames
                warnings.simplefilter("ignore", UserWarning)
                fit = deconvolve(y, penalty=1)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            failed += 1
            continue
        c, s = np.asarray(fit.c), np.asarray(fit.s)
        if not (np.isfinite(c).all() and np.isfinite(s).all()):
            failed += 1
            continue
        calcium[k], spikes[k] = c, np.maximum(s, 0)  # -1e-20 from rounding
        coefficients[k] = float(np.ravel(fit.g)[0])
    info = {
        "method": "OASIS AR(1), L1 penalty, noise-constrained",
        "package": f"oasis-deconv {importlib.metadata.version('oasis-deconv')}",
        "input": "fluorescence - coefficient * neuropil",
        "failed": failed,
        "ar_coefficient_median": (round(float(np.nanmedian(coefficients)), 6)
                                  if np.isfinite(coefficients).any() else None),
    }
    return calcium, spikes, info
