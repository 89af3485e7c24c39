"""A job as many tasks: prepare (queue ``cpu``), one task per chunk or per group of consecutive
chunks (``gpu``, ``Settings.chunks_per_task``), finalize (``cpu``).

``prepare_job`` reads the movie's range and motion reference, writes the plan next to the result
and queues every chunk. ``run_chunk`` runs its chunks through the network as one pipeline and
writes each partial result (re-running a chunk writes the same bytes), counting each in the job's
Redis hash as it lands, once per chunk id; the task that counts the last chunk queues
``finalize_job``, which stitches the partial results into the result group (no network) and
reads the kept neurons' fluorescence from the movie. A job canceled meanwhile is noticed before
each chunk and before each batch of patches; its partial results are removed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from kombu.exceptions import OperationalError

from caimx.jobs import InvalidTransitionError, Job, JobState, JobStore
from caimx.queue import TASK_FINALIZE_JOB, TASK_RUN_CHUNK, TASK_WEBHOOK
from caimx.settings import Settings
from model.inference.run import start_predict
from model.registry import sha256_file
from worker import model_cache
from worker.runner import (
    RESULT_NAME,
    _jsonable,
    failure_reason,
    inference_params,
    open_job_movie,
)

log = logging.getLogger(__name__)
Send = Callable[..., None]
"""``send(task_name, *args)``: queue a task on its queue."""
WORK_NAME = "work"


REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OperationalError)
"""Redis is away for a moment: never a reason to fail a job (the task waits and runs again)."""


class JobStopped(Exception):
    """The job is no longer running (canceled or failed by another task)."""


class TooManyAttempts(RuntimeError):
    """A task was delivered more often than ``max_attempts``: it kills its worker every time."""


def count_delivery(store: JobStore, settings: Settings, job_id: str, task: str) -> None:
    """Count one more delivery of ``task`` of the job; raise when there were too many.

    A task whose worker died (killed, out of memory, a crash in a reader) is delivered again by
    the broker; this bounds how often, so a poisoned movie fails its own job and nothing else.
    """
    key = f"{store.key(job_id)}:deliveries"
    count = store.client.hincrby(key, task, 1)
    store.client.expire(key, 7 * 24 * 3600)
    if count > settings.max_attempts:
        raise TooManyAttempts(
            f"{task} was started {count - 1} times and its worker died each time (crash, out of "
            f"memory or killed); the movie may be damaged")  # fmt: skip


def job_dir(settings: Settings, job_id: str) -> Path:
    return settings.results_dir / job_id


def work_dir(settings: Settings, job_id: str) -> Path:
    return job_dir(settings, job_id) / WORK_NAME


def _open(job: Job, settings: Settings):
    return open_job_movie(job.input_path, job.input_options, settings)


def _stop_if_not_running(store: JobStore, job_id: str) -> None:
    if store.state(job_id) is not JobState.RUNNING:
        raise JobStopped(job_id)


class _CancelAware:
    """A predictor that checks, before each batch, that the job still runs."""

    def __init__(self, predictor: Any, check: Callable[[], None]) -> None:
        self._predictor, self._check = predictor, check
        self.card = predictor.card
        self.runtime = getattr(predictor, "runtime", "")
        if hasattr(predictor, "stage"):  # batches copied to the device ahead (Keras runner)
            self.stage = predictor.stage

    def predict(self, patches: Any) -> Any:
        self._check()
        return self._predictor.predict(patches)

    def start(self, patches: Any, *, denoised: bool = True,
              attention_frames: Any = None) -> Callable[[], Any]:
        self._check()
        return start_predict(self._predictor, patches, denoised=denoised,
                             attention_frames=attention_frames)


def _disk_full(exc: BaseException, folder: Path) -> BaseException:
    """``exc``, or ENOSPC if it is a short write (numpy, zarr) on a results disk that is full."""
    if isinstance(exc, OSError) and exc.errno is None:
        with contextlib.suppress(OSError):
            if shutil.disk_usage(folder).free < 1024 * 1024:
                return OSError(errno.ENOSPC, f"no space left on the results storage ({exc})")
    return exc


def fail(store: JobStore, settings: Settings, job_id: str, exc: BaseException, send: Send) -> None:
    """Record a short reason, remove partial results, tell the webhook."""
    exc = _disk_full(exc, settings.results_dir)
    shutil.rmtree(job_dir(settings, job_id), ignore_errors=True)
    if store.state(job_id).terminal:  # canceled meanwhile: its folder went away under the task
        log.info("job %s stopped (%s) while a task ran: %s", job_id, store.state(job_id), exc)
        return
    log.error("job %s failed", job_id, exc_info=exc)
    try:
        job = store.transition(job_id, JobState.FAILED, finished_at=time.time(),
                               error=failure_reason(exc))  # fmt: skip
    except InvalidTransitionError:
        return
    if job.webhook_url:
        send(TASK_WEBHOOK, job_id)


def _stopped(store: JobStore, settings: Settings, job_id: str) -> None:
    if store.state(job_id) is JobState.CANCELED:
        shutil.rmtree(job_dir(settings, job_id), ignore_errors=True)


@contextlib.contextmanager
def task_outcome(store: JobStore, settings: Settings, job_id: str, send: Send) -> Iterator[None]:
    """The one failure path of every task of a job.

    A job stopped meanwhile (canceled, or its state changed under the task) only loses its
    partial results; a Redis outage propagates, so the task waits and runs again; anything else
    fails the job with a short reason.
    """
    try:
        yield
    except (JobStopped, InvalidTransitionError):
        _stopped(store, settings, job_id)
    except REDIS_DOWN:
        raise
    except Exception as exc:
        fail(store, settings, job_id, exc, send)


def _sha256(path: Path) -> str:
    """SHA-256 of a movie file (referenced movies are hashed here, not in the API)."""
    return sha256_file(path) if path.is_file() else ""


def prepare_job(job_id: str, *, settings: Settings, store: JobStore, send: Send) -> None:
    """Plan the job and queue its chunks (a redelivered prepare plans again from scratch)."""
    from model.inference import prepare
    from model.registry import resolve_model

    job = store.get(job_id)
    if job.state.terminal:
        return
    try:
        count_delivery(store, settings, job_id, "prepare")
    except TooManyAttempts as exc:
        fail(store, settings, job_id, exc, send)
        return
    started = time.time()
    try:
        store.transition(job_id, JobState.RUNNING, started_at=started, attempts=job.attempts + 1,
                         chunks_done=0, error=None)  # fmt: skip
    except InvalidTransitionError:
        return
    with task_outcome(store, settings, job_id, send):
        card = resolve_model(job.model, settings.models_dir).card
        params = inference_params(settings, job.params)
        work = work_dir(settings, job_id)
        if job_dir(settings, job_id).exists():
            shutil.rmtree(job_dir(settings, job_id))
        with _open(job, settings) as movie:
            plan = prepare(movie, card, work_dir=work, params=params)
        store.update(job_id, params=params.to_dict(),
                     timings={"prepare_s": round(time.time() - started, 3)})
        _stop_if_not_running(store, job_id)
        store.reset_chunks(job_id, len(plan.chunks))
        ids = [chunk.id for chunk in plan.chunks]
        step = settings.chunks_per_task
        for first in range(0, len(ids), step):
            group = ids[first:first + step]
            send(TASK_RUN_CHUNK, job_id, group[0] if len(group) == 1 else group)
        if not job.input_sha256:
            # a referenced movie is hashed once its chunks are queued (a full read: 40 s and
            # more for 50 GB), so other workers run them meanwhile; finalize hashes it itself
            # if it comes first
            store.update(job_id, input_sha256=_sha256(Path(job.input_path)))


def run_chunk(job_id: str, chunk_ids: str | list[str], *, settings: Settings, store: JobStore,
              send: Send) -> None:  # fmt: skip
    """Compute one chunk (or several consecutive ones as one pipeline), count each as it lands,
    and queue finalize after the last one of the job.

    A redelivered task skips the chunks already counted, so a group cut short by a dead worker
    resumes where it stopped.
    """
    from model.inference import load_plan, run_chunks

    ids = [chunk_ids] if isinstance(chunk_ids, str) else list(chunk_ids)
    job = store.get(job_id)
    if job.state is not JobState.RUNNING:
        _stopped(store, settings, job_id)
        return
    done = store.done_chunks(job_id)
    todo = [chunk_id for chunk_id in ids if chunk_id not in done]
    if not todo:  # redelivered after it was counted
        if job.chunks_total and job.chunks_done >= job.chunks_total:
            send(TASK_FINALIZE_JOB, job_id)
        return
    start = time.perf_counter()
    with task_outcome(store, settings, job_id, send):
        count_delivery(store, settings, job_id,
                       f"chunk {ids[0]}" if len(ids) == 1 else f"chunks {ids[0]}..{ids[-1]}")
        work = work_dir(settings, job_id)
        plan = load_plan(work)
        cached = model_cache.get_predictor(job.model, settings)
        predictor = _CancelAware(cached.predictor, lambda: _stop_if_not_running(store, job_id))
        clock = {"since": time.perf_counter(), "load_s": cached.load_s}

        def count(chunk_id: str) -> None:
            now = time.perf_counter()
            counted = store.complete_chunk(job_id, chunk_id, seconds=now - clock["since"],
                                           load_s=clock["load_s"])
            clock["since"], clock["load_s"] = now, 0.0  # the model was loaded once
            if not counted.running:
                raise JobStopped(job_id)
            log.info("job %s chunk %s done (%d/%d), task %.1f s", job_id, chunk_id, counted.done,
                     counted.total, now - start)  # fmt: skip
            if counted.last:
                send(TASK_FINALIZE_JOB, job_id)

        with _open(job, settings) as movie:
            # this worker's batch size (its model was compiled for it) and threads, not those
            # of the worker that prepared the job
            run_chunks(movie, predictor, plan, todo, work_dir=work,
                       **cached.engine_settings(settings),
                       batches_in_flight=settings.batches_in_flight, on_written=count)


def requeue_unfinished(store: JobStore, settings: Settings, send: Send) -> int:
    """Queue again every uncounted chunk of every running job; the number of chunks queued.

    Called after a Redis outage: a message taken off the queue just as Redis stopped can be lost
    (the broker had not yet recorded it as unacknowledged). Chunks are idempotent and counted
    once, and a redelivered counted chunk returns at once, so queueing again is always safe.
    """
    from model.inference.engine import PLAN_FILE, load_plan

    queued = 0
    for job_id in store.list_ids(limit=100_000):
        job = store.get(job_id)
        work = work_dir(settings, job_id)
        if job.state is not JobState.RUNNING or not (work / PLAN_FILE).is_file():
            continue
        done = store.done_chunks(job_id)
        missing = [chunk.id for chunk in load_plan(work).chunks if chunk.id not in done]
        for chunk_id in missing:
            send(TASK_RUN_CHUNK, job_id, chunk_id)
        if not missing:
            send(TASK_FINALIZE_JOB, job_id)
        queued += len(missing)
    if queued:
        log.warning("queued %d unfinished chunks again after a Redis outage", queued)
    return queued


def _attrs(job: Job, card: Any, params: Any) -> dict[str, Any]:
    from model.inference.engine import software_version

    request = job.request or {}
    return {
        "model": {"name": card.name, "version": card.version, "card": card.to_dict()},
        "input": {"name": job.input_name, "sha256": job.input_sha256,
                  "shape": list(job.movie_shape or ()), "dtype": job.movie_dtype,
                  "fps": job.movie_fps, "pixel_size_um": request.get("pixel_size_um"),
                  "source": job.source, "layout": job.movie_layout or None},
        "software": {"caimx": software_version()},
        "parameters": params.to_dict(),
        "job": {"id": job.id, "outputs": request.get("outputs")},
    }  # fmt: skip


def finalize_job(job_id: str, *, settings: Settings, store: JobStore, send: Send) -> None:
    """Stitch the chunks into ``results/<id>/result.zarr`` and mark the job succeeded."""
    job = store.get(job_id)
    if job.state is not JobState.RUNNING:
        _stopped(store, settings, job_id)
        return
    lock = f"{store.key(job_id)}:finalize"
    if not store.client.set(lock, store.writer, nx=True, ex=settings.task_time_limit_s):
        return  # another finalize of this job is running
    start = time.perf_counter()
    output = job_dir(settings, job_id) / RESULT_NAME
    try:
        with task_outcome(store, settings, job_id, send):
            _finalize(job, output, settings=settings, store=store, send=send, start=start)
    finally:
        with contextlib.suppress(*REDIS_DOWN):
            store.client.delete(lock)


def _finalize(job: Job, output: Path, *, settings: Settings, store: JobStore, send: Send,
              start: float) -> None:  # fmt: skip
    """Finalize's work inside :func:`task_outcome`: stitch, write, mark succeeded."""
    from model.inference import InferenceParams, finalize, load_plan
    from model.inference.digest import digest_alongside
    from model.registry import resolve_model
    from model.results import DIGEST_PENDING, write_input_digest

    job_id = job.id
    count_delivery(store, settings, job_id, "finalize")
    work = work_dir(settings, job_id)
    plan = load_plan(work)
    card = resolve_model(job.model, settings.models_dir).card
    params = InferenceParams.from_dict(plan.params)
    # prepare's digest of a referenced movie may not be in yet: then made here alongside
    with (_open(job, settings) as movie,  # read again for each neuron's fluorescence
          digest_alongside(movie, job.input_sha256) as digest):
        attrs = _attrs(job, card, params)
        attrs["input"]["sha256"] = DIGEST_PENDING
        summary = finalize(plan, work_dir=work, output=output, attrs=attrs, movie=movie)
        sha256 = digest.result()
        write_input_digest(output, sha256)
        if sha256 != job.input_sha256:
            store.update(job_id, input_sha256=sha256)
    facts = _jsonable(summary) or {}
    facts.pop("seconds", None)
    facts.pop("decisions", None)
    job = store.get(job_id)
    timings = {**job.timings, "load_model_s": round(job.model_load_seconds, 3),
               "inference_s": round(job.chunk_seconds, 3),
               "finalize_s": round(time.perf_counter() - start, 3),
               "total_s": round(time.time() - (job.started_at or time.time()), 3)}  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    job = store.transition(job_id, JobState.SUCCEEDED, finished_at=time.time(),
                           result_path=str(output), summary=facts, timings=timings)  # fmt: skip
    if job.webhook_url:
        send(TASK_WEBHOOK, job_id)
