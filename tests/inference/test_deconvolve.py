"""OASIS deconvolution of the corrected fluorescence (``model.inference.deconvolve``)."""

import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from processes import child_pids, is_alive

from model.evaluate import pearson
from model.inference.deconvolve import available, deconvolve_traces


def _calcium(n_frames: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A GCaMP6f-like AR(1) calcium trace at 30 Hz and the same with photon-like noise."""
    rng = np.random.default_rng(seed)
    spikes = (rng.random(n_frames) < 0.02).astype(float) * rng.uniform(0.5, 1.5, n_frames)
    clean = np.zeros(n_frames)
    for t in range(1, n_frames):
        clean[t] = 0.92 * clean[t - 1] + spikes[t]
    return clean, 10.0 + clean + rng.normal(0, 0.5, n_frames)


def test_the_development_setup_has_oasis():
    assert available()  # the dev extra installs it; the engine skips calcium without it


def test_denoised_calcium_follows_the_clean_trace_better_than_the_raw_one():
    pairs = [_calcium(seed=s) for s in range(3)]
    raw = np.array([noisy for _, noisy in pairs])
    calcium, spikes, info = deconvolve_traces(raw)
    assert calcium.shape == spikes.shape == raw.shape and calcium.dtype == np.float32
    for (clean, noisy), denoised in zip(pairs, calcium, strict=True):
        assert pearson(noisy, clean) < 0.6  # one spike is about the noise's size
        assert pearson(denoised, clean) > 0.85
    assert (spikes >= 0).all() and info["failed"] == 0
    assert 0.85 < info["ar_coefficient_median"] < 0.97  # the 0.92 decay per frame, fitted


def test_flat_or_broken_traces_are_zeros_and_counted():
    _, noisy = _calcium()
    broken = np.where(np.arange(noisy.size) == 5, np.nan, noisy)
    traces = np.array([noisy, np.full(noisy.size, 7.0), broken])
    calcium, spikes, info = deconvolve_traces(traces)
    assert info["failed"] == 2
    assert not calcium[1:].any() and not spikes[1:].any()
    assert calcium[0].any()


def test_short_traces_deconvolve_quietly():
    _, noisy = _calcium(100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # OASIS's spectrum warns below 256 frames; not shown
        calcium, _, info = deconvolve_traces(noisy[None])
    assert calcium.shape == (1, 100) and info["failed"] == 0


def test_a_noisy_trace_fits_better_with_the_decay_its_movie_shares():
    # alone, a noisy trace's autocovariance puts its decay anywhere (0.34-0.84 here, 0.92 true);
    # beside five clearer cells of the same movie it is fitted with their shared median
    others = np.array([_calcium(seed=s)[1] for s in range(5)])
    alone_r, shared_r = [], []
    for seed in range(10, 15):
        clean, _ = _calcium(seed=seed)
        noisy = 10.0 + clean + np.random.default_rng(seed + 100).normal(0, 1.5, clean.size)
        alone, _, info_alone = deconvolve_traces(noisy[None])
        shared, _, info = deconvolve_traces(np.vstack([others, noisy[None]]))
        assert info_alone["ar_coefficient"] == "per trace"  # one trace: too few to share
        assert 0.85 < info["ar_coefficient"] < 0.95
        alone_r.append(pearson(alone[0], clean))
        shared_r.append(pearson(shared[-1], clean))
    assert np.mean(shared_r) > np.mean(alone_r) + 0.05
    assert min(s - a for s, a in zip(shared_r, alone_r, strict=True)) > -0.02


def test_decay_and_noise_of_all_traces_at_once_match_oasis_trace_by_trace():
    from oasis.functions import estimate_parameters

    from model.inference.deconvolve import AR1_FUDGE_FACTOR, _estimates

    traces = np.array([_calcium(n, seed=s)[1] for n, s in ((3000, 0), (3000, 1), (3000, 2))]
                      + [np.full(3000, 5.0)])  # constant: no estimate
    traces[1] *= 40.0  # another scale
    found = _estimates(traces)
    assert found[3] is None
    for trace, estimate in zip(traces[:3], found[:3], strict=True):
        g, sn = estimate_parameters(trace, p=1, fudge_factor=AR1_FUDGE_FACTOR)
        np.testing.assert_allclose(estimate, (float(np.ravel(g)[0]), sn), rtol=1e-9)
    for seed in (5, 4):  # < 256 frames: Welch on shorter segments, quietly
        short = _calcium(120, seed=seed)[1]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            (g_short, sn_short), = _estimates(short[None])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g, sn = estimate_parameters(short, p=1, fudge_factor=AR1_FUDGE_FACTOR)
        if seed == 4:  # a negative coefficient: 0.15 where OASIS adds random jitter to it
            assert g_short == 0.15 * AR1_FUDGE_FACTOR and abs(g[0] - g_short) < 0.1
            g = [g_short]
        np.testing.assert_allclose((g_short, sn_short), (float(np.ravel(g)[0]), sn), rtol=1e-9)


def test_fits_in_other_processes_are_the_same_bits(monkeypatch):
    from model.inference import deconvolve

    traces = np.array([_calcium(2000, seed=s)[1] * (1 + s) for s in range(9)]
                      + [np.full(2000, 3.0)], np.float32)  # a flat one fails either way
    alone = deconvolve_traces(traces, processes=1)
    monkeypatch.setattr(deconvolve, "MIN_SAMPLES_FOR_PROCESSES", 1)
    shared = deconvolve_traces(traces, processes=2)
    for a, b in zip(alone[:2], shared[:2], strict=True):
        assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
    assert alone[2] == shared[2] and shared[2]["failed"] == 1


def test_fits_whose_processes_fail_are_made_here_with_the_same_result(monkeypatch, caplog):
    from model.inference import deconvolve

    traces = np.array([_calcium(1000, seed=s)[1] for s in range(6)], np.float32)
    alone = deconvolve_traces(traces, processes=1)

    def no_processes():
        raise OSError("no process may be started here")

    monkeypatch.setattr(deconvolve, "MIN_SAMPLES_FOR_PROCESSES", 1)
    monkeypatch.setattr(deconvolve, "_context", no_processes)
    again = deconvolve_traces(traces, processes=2)
    assert np.array_equal(alone[0], again[0]) and np.array_equal(alone[1], again[1])
    assert "fitting in this process" in caplog.text


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_killed_engine_leaves_no_fitting_processes_behind():
    # fits that go on until killed, in 2 processes forked from the engine's fork server
    script = (
        "import numpy as np\n"
        "from model.inference import deconvolve\n"
        "deconvolve.MIN_SAMPLES_FOR_PROCESSES = 1\n"
        "traces = 10 + np.cumsum(np.random.default_rng(0).normal(0, 1, (8, 20000)), axis=1)\n"
        "while True:\n"
        "    deconvolve.deconvolve_traces(traces, processes=2)\n")
    engine = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2:
            servers = child_pids(engine.pid)  # the fork server (and the resource tracker)
            workers = [w for s in servers for w in child_pids(s)]
            time.sleep(0.1)
        assert len(workers) == 2, "the fitting processes did not start"
    finally:
        engine.kill()
        engine.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(is_alive(p) for p in [*servers, *workers]):
        time.sleep(0.1)
    assert not [p for p in [*servers, *workers] if is_alive(p)]
