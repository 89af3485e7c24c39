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
import logging
import multiprocessing
import os
import select
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def available() -> bool:
    """Whether ``oasis-deconv`` is installed."""
    return importlib.util.find_spec("oasis") is not None


def preload(processes: int = 1, n_frames: int = 0) -> None:
    """Import OASIS ahead of its first use (with the parts of SciPy it pulls in, 0.4 s that
    would otherwise come after a movie's last chunk); for a movie of ``n_frames`` long enough
    that its fits may go to other processes (:data:`PRESTART_FRAMES`), with ``processes`` > 1,
    also start the server they are forked from (about 1 s once per process: it imports this
    module). Nothing when OASIS is not installed."""
    if not available():
        return
    import oasis.functions  # noqa: F401

    if n_frames >= PRESTART_FRAMES and fit_processes(processes) > 1:
        try:
            import multiprocessing.forkserver

            _context()  # names this module for the server to import
            multiprocessing.forkserver.ensure_running()
        except (OSError, ValueError) as exc:  # no fork server on this platform: fitted here
            log.info("no fork server for OASIS fits (%s)", exc)


#: Fewest fitted traces whose median AR coefficient is shared by all traces of a movie.
MIN_TRACES_FOR_SHARED_DECAY = 5


#: Trace samples (neurons x frames) below which the fits stay in this process: about 0.6 s of
#: fitting on one core, against about 0.1 s to hand the traces to other processes and back.
MIN_SAMPLES_FOR_PROCESSES = 1_000_000

#: Frames from which :func:`preload` starts the fork server: a field of 200 neurons then has
#: :data:`MIN_SAMPLES_FOR_PROCESSES` samples.
PRESTART_FRAMES = MIN_SAMPLES_FOR_PROCESSES // 200

#: Most processes the fits use unless asked for more.
MAX_AUTO_PROCESSES = 8


def fit_processes(requested: int) -> int:
    """How many processes fit traces for ``requested`` (0: one per core this process may use,
    at most :data:`MAX_AUTO_PROCESSES`): 1 inside a daemonic process, which may not start any
    (a Celery prefork child unless its worker allowed it)."""
    if multiprocessing.current_process().daemon:
        return 1
    if requested > 0:
        return requested
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return max(1, min(MAX_AUTO_PROCESSES, cores))


def deconvolve_traces(traces: np.ndarray, *, processes: int = 1,
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:  # fmt: skip
    """``(calcium, spikes, info)`` of ``traces`` ``(K, T)``, one neuron at a time.

    A trace that is constant, not finite everywhere, or that OASIS cannot fit gets zeros in both
    outputs; ``info["failed"]`` counts them. ``info["ar_coefficient_median"]`` is the median of
    the traces' own AR(1) estimates (the calcium decay per frame), ``info["ar_coefficient"]``
    the one the fits used (that median, or ``"per trace"`` when too few traces could be fitted).

    OASIS's fits hold the interpreter lock (about 0.6 microseconds per frame and trace on one
    core of the development host: 3-4 s for 200 neurons x 30000 frames), so threads do not
    share them; ``processes`` (0: :func:`fit_processes`) fit groups of traces in other
    processes when there are at least :data:`MIN_SAMPLES_FOR_PROCESSES` samples. Each trace is
    fitted by the same code either way: the results are the same bits.
    """
    traces = np.asarray(traces)
    calcium = np.zeros(traces.shape, np.float32)
    spikes = np.zeros(traces.shape, np.float32)
    estimates = _estimates(traces)
    coefficients = np.array([e[0] if e is not None else np.nan for e in estimates])
    fitted = np.isfinite(coefficients)
    shared = None
    if fitted.sum() >= MIN_TRACES_FOR_SHARED_DECAY:
        shared = float(np.median(coefficients[fitted]))
    rows = np.flatnonzero(fitted)
    to_fit = traces[rows]
    decays = [(shared, estimates[k][0]) for k in rows]
    noises = [estimates[k][1] for k in rows]
    done = np.zeros(len(traces), bool)
    n_processes = fit_processes(processes)
    if n_processes > 1 and len(rows) > 1 and to_fit.size >= MIN_SAMPLES_FOR_PROCESSES:
        fits = _fit_in_processes(to_fit, decays, noises, n_processes)
    else:
        fits = _fit_group(to_fit, decays, noises)
    for k, fit in zip(rows, fits, strict=True):
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


def _fit_group(traces: np.ndarray, decays: list[tuple[float | None, float]],
               noises: list[float]) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """``(calcium, spikes)`` float32 (or None) of each trace: with the shared decay when there
    is one (``decays[i]``: ``(shared, own)``), with its own when there is none or the shared one
    cannot be fitted.

    On one BLAS thread: OASIS's dot products over a whole trace otherwise wake a BLAS thread
    per core that spins for work (twice the CPU time for the same wall time on one process;
    several fitting processes on as many cores slowed each other 2-5x)."""
    from threadpoolctl import threadpool_limits

    out: list[tuple[np.ndarray, np.ndarray] | None] = []
    with threadpool_limits(limits=1, user_api="blas"):
        for trace, (shared, own), noise in zip(traces, decays, noises, strict=True):
            fit = _fit(trace, shared, noise) if shared is not None else None
            if fit is None:
                fit = _fit(trace, own, noise)
            out.append(None if fit is None else (fit[0].astype(np.float32),
                                                 fit[1].astype(np.float32)))
    return out


def _context() -> Any:
    """Fitting processes come from a fork server: forking the engine's process itself (its
    threads, a GPU runtime) is unsafe, and spawning each afresh costs an interpreter start."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "oasis.functions"])
    return context


def _end_with(engine: int) -> None:
    """In a fitting process: exit as soon as the process ``engine`` has ended, so a killed
    engine leaves no fitting processes behind. (Their parent is the fork server, which lives
    until they end; each would otherwise wait forever for work on a queue it holds both ends
    of.)"""

    def watch() -> None:
        try:
            handle = os.pidfd_open(engine)  # Linux: readable once the process has ended
        except (AttributeError, OSError):
            handle = None
        if handle is not None:
            select.select([handle], [], [])
        else:
            while True:
                time.sleep(1.0)
                try:
                    os.kill(engine, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    continue
        os._exit(1)

    threading.Thread(target=watch, name="caimx-watch-engine", daemon=True).start()


def _fit_in_processes(traces: np.ndarray, decays: list[tuple[float | None, float]],
                      noises: list[float], processes: int,
                      ) -> list[tuple[np.ndarray, np.ndarray] | None]:  # fmt: skip
    """:func:`_fit_group` in ``processes`` processes, four groups of traces each
    (traces differ in how long they take); in this process, with the same result, if the
    processes cannot be started or used for any reason (one of them dies, this process may not
    hand them its state): a movie's traces are never lost to the speed-up."""
    groups = np.array_split(np.arange(len(traces)), min(len(traces), processes * 4))
    try:
        with ProcessPoolExecutor(max_workers=processes, mp_context=_context(),
                                 initializer=_end_with, initargs=(os.getpid(),)) as pool:
            parts = pool.map(_fit_group, [traces[g] for g in groups],
                             [[decays[i] for i in g] for g in groups],
                             [[noises[i] for i in g] for g in groups])
            return [fit for part in parts for fit in part]
    except Exception as exc:  # a broken pool, OSError, a pickling refusal, ...
        log.warning("OASIS fits in %d processes failed (%s); fitting in this process",
                    processes, exc)
        return _fit_group(traces, decays, noises)


def _usable(trace: np.ndarray) -> np.ndarray | None:
    y = np.asarray(trace, np.float64)
    if y.size < 4 or not np.isfinite(y).all() or np.ptp(y) == 0:
        return None
    return y


#: Lags of the autocovariance the AR(1) coefficient is fitted to (OASIS's default 10, plus 1).
AR1_LAGS = 11

#: Band of the power spectrum (x the sampling rate) whose mean gives the noise (OASIS's default).
NOISE_BAND = (0.25, 0.5)


def _estimates(traces: np.ndarray) -> list[tuple[float, float] | None]:
    """``(AR(1) coefficient, noise SD)`` of each trace, as OASIS's ``deconvolve`` estimates them
    before it fits (``estimate_parameters(y, p=1, fudge_factor=AR1_FUDGE_FACTOR)``: the noise
    from the mean of the trace's Welch power spectrum over :data:`NOISE_BAND`, the coefficient
    by least squares on its autocovariance, noise removed at lag 0); ``None`` for a constant or
    not finite trace.

    Computed for all traces at once (one Welch call, one product per lag) and handed to every
    fit: the estimate is about half of a fit's time when OASIS makes it per trace. Equal to
    OASIS's own to round-off (test), except that a coefficient outside (0, 1] becomes 0.95 or
    0.15 without OASIS's random jitter, so a result is the same on every run.
    """
    from scipy.signal import welch

    out: list[tuple[float, float] | None] = [None] * len(traces)
    rows = [k for k, trace in enumerate(traces) if _usable(trace) is not None]
    if not rows:
        return out
    y = np.asarray(traces, np.float64)[rows]
    n = y.shape[1]
    with warnings.catch_warnings():  # Welch warns on traces < 256 frames (shorter segments)
        warnings.simplefilter("ignore", UserWarning)
        freqs, power = welch(y, axis=-1)
    band = (freqs > NOISE_BAND[0]) & (freqs < NOISE_BAND[1])
    with np.errstate(all="ignore"):
        noise = np.sqrt(np.mean(power[:, band] / 2, axis=1))
        y -= y.mean(axis=1, keepdims=True)
        lags = min(AR1_LAGS, n - 1)
        cov = np.stack([np.einsum("ij,ij->i", y[:, i:], y[:, :n - i]) for i in range(lags + 1)],
                       axis=1) / n
        design = cov[:, :lags].copy()
        design[:, 0] -= noise**2
        decay = np.einsum("ij,ij->i", design, cov[:, 1:]) / np.einsum("ij,ij->i", design,
                                                                          design)
    decay = np.where(decay > 1, 0.95, np.where(decay < 0, 0.15, decay)) * AR1_FUDGE_FACTOR
    for k, g, sn in zip(rows, decay, noise, strict=True):
        if np.isfinite(g) and np.isfinite(sn):
            out[k] = (float(g), float(sn))
    return out


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
