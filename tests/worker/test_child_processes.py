"""A worker's prefork child may fit calcium traces in processes of its own."""

import billiard
import numpy as np


def _deconvolve_in_child(queue, lift: bool) -> None:
    import logging

    from model.inference import deconvolve
    from worker.celery_app import allow_child_processes

    if lift:
        allow_child_processes()
    deconvolve.MIN_SAMPLES_FOR_PROCESSES = 1  # this child only: a few short traces suffice
    fell_back = []
    handler = logging.Handler()
    handler.emit = lambda record: fell_back.append(record.getMessage())
    deconvolve.log.addHandler(handler)
    rng = np.random.default_rng(0)
    traces = 10 + np.cumsum(rng.normal(0, 1, (6, 500)), axis=1)
    calcium, _, info = deconvolve.deconvolve_traces(traces, processes=2)
    queue.put((deconvolve.fit_processes(2), fell_back, info["failed"], float(calcium.sum())))


def _children_fit(queue) -> None:
    """In a fresh process, as a worker's main process (which fits nothing itself): fork a
    daemonic child the way Celery's prefork pool does, with and without the worker's preparation."""
    context = billiard.get_context("fork")
    results = {}
    for lift in (False, True):
        answers = context.Queue()
        child = context.Process(target=_deconvolve_in_child, args=(answers, lift), daemon=True)
        child.start()
        results[lift] = answers.get(timeout=120)
        child.join(60)
        results[lift] += (child.exitcode,)
    queue.put(results)


def test_a_prefork_child_fits_alone_unless_its_worker_allows_processes():
    # Celery's prefork children are daemonic processes of its own process library (billiard),
    # which may start no processes and whose key the standard library will not hand on; the
    # worker prepares each child at its start so that the fits can use processes
    context = billiard.get_context("spawn")
    queue = context.Queue()
    main = context.Process(target=_children_fit, args=(queue,))
    main.start()
    results = queue.get(timeout=240)
    main.join(60)
    assert results[False][:3] == (1, [], 0)  # fitted in the child, as it may not do otherwise
    assert results[True][:3] == (2, [], 0)  # in 2 processes, without falling back
    assert results[True][3] == results[False][3]  # the same calcium
    assert results[False][4] == results[True][4] == 0  # both children ended cleanly
