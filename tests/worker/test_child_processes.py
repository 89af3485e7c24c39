"""A worker's prefork child may fit calcium traces in processes of its own."""

import multiprocessing

import numpy as np


def _deconvolve_in_child(queue, lift: bool) -> None:
    from model.inference import deconvolve
    from worker.celery_app import allow_child_processes

    if lift:
        allow_child_processes()
    deconvolve.MIN_SAMPLES_FOR_PROCESSES = 1  # this child only: a few short traces suffice
    rng = np.random.default_rng(0)
    traces = 10 + np.cumsum(rng.normal(0, 1, (6, 500)), axis=1)
    try:
        deconvolve.deconvolve_traces(traces, processes=2)
        queue.put((deconvolve.fit_processes(2), "fitted"))
    except Exception as exc:  # reported to the test, which fails on it
        queue.put((deconvolve.fit_processes(2), repr(exc)))


def test_a_daemonic_child_fits_alone_unless_its_worker_allows_processes():
    # Celery marks prefork children daemonic, and a daemonic process may not start processes:
    # the fits then stay in the child; the worker lifts the mark when a child starts
    context = multiprocessing.get_context("forkserver")
    for lift, expected in ((False, 1), (True, 2)):
        queue = context.Queue()
        child = context.Process(target=_deconvolve_in_child, args=(queue, lift), daemon=True)
        child.start()
        assert queue.get(timeout=120) == (expected, "fitted")
        child.join(60)
        assert child.exitcode == 0
