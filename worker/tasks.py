"""Celery tasks (registered by name, so the API can send them without importing this module)."""

from __future__ import annotations

from celery import Celery, Task

from caimx.jobs import DEFAULT_PREFIX, JobStore
from caimx.queue import TASK_PROCESS_JOB
from caimx.settings import Settings
from worker.runner import run_job


def register_tasks(app: Celery, *, settings: Settings, prefix: str = DEFAULT_PREFIX) -> None:
    """Add the worker's tasks to ``app``."""
    stores: dict[str, JobStore] = {}

    def store_for(hostname: str) -> JobStore:
        if hostname not in stores:  # one connection pool per worker process
            stores[hostname] = JobStore.from_url(
                settings.redis_url, writer=f"worker:{hostname}", prefix=prefix
            )
        return stores[hostname]

    @app.task(name=TASK_PROCESS_JOB, bind=True, acks_late=True)
    def process_job(self: Task, job_id: str) -> str:
        """Process one uploaded movie into its result; the job's state says how it went."""
        store = store_for(self.request.hostname or "worker")
        return str(run_job(job_id, settings=settings, store=store))
