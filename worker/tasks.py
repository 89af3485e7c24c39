"""Celery tasks (registered by name, so the API can send them without importing this module)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery, Task

from caimx.jobs import DEFAULT_PREFIX, Job, JobStore, UnknownJobError
from caimx.queue import (
    TASK_CLEANUP,
    TASK_FINALIZE_JOB,
    TASK_PREPARE_JOB,
    TASK_PROCESS_JOB,
    TASK_RUN_CHUNK,
    TASK_WEBHOOK,
    send,
)
from caimx.retention import cleanup
from caimx.settings import Settings
from caimx.upload_store import UploadStore
from worker import pipeline, webhooks
from worker.runner import run_job

log = logging.getLogger(__name__)
REDIS_PATIENCE_S = 900.0
"""How long a task waits for Redis to come back before it gives up (and is delivered again)."""


def through_outages(run: Callable[[], None], client: redis.Redis, *,
                    recovered: Callable[[], object] = lambda: None,
                    patience_s: float = REDIS_PATIENCE_S) -> None:  # fmt: skip
    """Run ``run``; if Redis goes away meanwhile, wait until it answers, call ``recovered`` and
    run it again.

    The tasks are idempotent (a chunk writes the same bytes and is counted once), so running one
    again after an outage is safe, and a job is never failed only because Redis restarted.
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return run()
        except pipeline.REDIS_DOWN as exc:
            log.warning("Redis is unreachable (%s); the task runs again when it is back", exc)
            delay = 0.5
            while True:
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                try:
                    client.ping()
                    recovered()
                    break
                except pipeline.REDIS_DOWN:
                    continue


def _time(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC).isoformat()


def webhook_job(job: Job) -> dict[str, Any]:
    """What a webhook says about the job (the fields of ``GET /v1/jobs/{id}`` that matter)."""
    base = f"/v1/jobs/{job.id}"
    return {
        "id": job.id, "state": str(job.state), "error": job.error, "model": job.model,
        "movie": {"name": job.input_name, "shape": list(job.movie_shape or ()),
                  "dtype": job.movie_dtype, "fps": job.movie_fps},
        "progress": {"chunks_done": job.chunks_done, "chunks_total": job.chunks_total},
        "created_at": _time(job.created_at), "finished_at": _time(job.finished_at),
        "summary": job.summary,
        "links": {"self": base, "result": f"{base}/result", "zarr": f"{base}/zarr",
                  "zip": f"{base}/result.zip"},
    }  # fmt: skip


def register_tasks(app: Celery, *, settings: Settings, prefix: str = DEFAULT_PREFIX) -> None:
    """Add the worker's tasks to ``app``."""
    stores: dict[str, JobStore] = {}

    def store_for(task: Task) -> JobStore:
        hostname = task.request.hostname or "worker"
        if hostname not in stores:  # one connection pool per worker process
            stores[hostname] = JobStore.from_url(
                settings.redis_url, writer=f"worker:{hostname}", prefix=prefix
            )
        return stores[hostname]

    def sender(name: str, *args: object) -> None:
        send(app, name, *args)

    def guarded(store: JobStore, run: Callable[[], None]) -> None:
        """Run a job task through Redis outages, queueing lost chunks again after one."""
        through_outages(run, store.client,
                        recovered=lambda: pipeline.requeue_unfinished(store, settings, sender))

    @app.task(name=TASK_PROCESS_JOB, bind=True, acks_late=True)
    def process_job(self: Task, job_id: str) -> str:
        """Process one movie in a single task; the job's state says how it went."""
        return str(run_job(job_id, settings=settings, store=store_for(self)))

    @app.task(name=TASK_PREPARE_JOB, bind=True, acks_late=True)
    def prepare_job(self: Task, job_id: str) -> None:
        """Plan the job and queue one chunk task per chunk (queue cpu)."""
        store = store_for(self)
        guarded(store, lambda: pipeline.prepare_job(job_id, settings=settings, store=store,
                                                    send=sender))  # fmt: skip

    @app.task(name=TASK_RUN_CHUNK, bind=True, acks_late=True)
    def run_chunk(self: Task, job_id: str, chunk_ids: str | list[str]) -> None:
        """One chunk, or consecutive chunks as one pipeline, through the network (queue gpu);
        the last chunk of the job queues finalize."""
        store = store_for(self)
        guarded(store, lambda: pipeline.run_chunk(job_id, chunk_ids, settings=settings,
                                                  store=store, send=sender))  # fmt: skip

    @app.task(name=TASK_FINALIZE_JOB, bind=True, acks_late=True)
    def finalize_job(self: Task, job_id: str) -> None:
        """Stitch the chunks into the result group (queue cpu)."""
        store = store_for(self)
        guarded(store, lambda: pipeline.finalize_job(job_id, settings=settings, store=store,
                                                     send=sender))  # fmt: skip

    @app.task(name=TASK_WEBHOOK, bind=True, acks_late=True, max_retries=None)
    def notify(self: Task, job_id: str) -> None:
        """POST the finished job to its webhook URL, signed; retried with doubling delays."""
        if settings.webhook_secret is None:
            log.warning("job %s has a webhook but CAIMX_WEBHOOK_SECRET is unset", job_id)
            return
        try:
            job = store_for(self).get(job_id)
        except UnknownJobError:
            return
        if not job.webhook_url:
            return
        body = webhooks.payload(webhook_job(job))
        try:
            secret = settings.webhook_secret.get_secret_value()
            webhooks.deliver(job.webhook_url, body, secret=secret,
                             timeout_s=settings.webhook_timeout_s)  # fmt: skip
        except webhooks.WebhookError as exc:
            retries = self.request.retries
            if retries >= settings.webhook_max_retries:
                log.error("webhook of job %s given up after %d tries: %s", job_id, retries + 1, exc)
                return
            delay = webhooks.backoff_s(settings.webhook_backoff_s, retries)
            log.warning("webhook of job %s failed (%s); retry in %.1f s", job_id, exc, delay)
            raise self.retry(countdown=delay, exc=exc) from exc

    @app.task(name=TASK_CLEANUP, bind=True, acks_late=True)
    def cleanup_task(self: Task) -> dict[str, list[str]]:
        """Remove expired results and uploads (never those of queued or running jobs)."""
        store = store_for(self)
        report = cleanup(settings, store, UploadStore(store.client, prefix=prefix))
        log.info("cleanup: %s", {k: len(v) for k, v in report.as_dict().items()})
        return report.as_dict()
