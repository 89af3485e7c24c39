"""What the API and the workers agree on about the task queue: names, Celery settings, liveness.

The service sends tasks *by name* (``send_task``) with a Celery app built here, so it never imports
the worker's code or TensorFlow; the worker builds its app from the same configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time

import redis
from celery import Celery

from caimx.jobs import DEFAULT_PREFIX
from caimx.settings import Settings

TASK_PROCESS_JOB = "caimx.process_job"
"""The whole job in one task (kept for single-machine use; the API sends the chunked flow)."""
TASK_PREPARE_JOB = "caimx.prepare_job"
"""Read the movie's range and motion reference, write the plan, queue one task per chunk."""
TASK_RUN_CHUNK = "caimx.run_chunk"
"""One chunk of the plan through the network; the last chunk queues finalize."""
TASK_FINALIZE_JOB = "caimx.finalize_job"
"""Stitch the chunks' partial results into the result group."""
TASK_WEBHOOK = "caimx.webhook"
TASK_CLEANUP = "caimx.cleanup"

QUEUE_GPU = "gpu"
QUEUE_CPU = "cpu"
QUEUE = QUEUE_GPU
QUEUES = (QUEUE_GPU, QUEUE_CPU)
"""Every queue; a worker started without ``--queues`` consumes all of them."""
TASK_QUEUES = {
    TASK_PROCESS_JOB: QUEUE_GPU,
    TASK_RUN_CHUNK: QUEUE_GPU,
    TASK_PREPARE_JOB: QUEUE_CPU,
    TASK_FINALIZE_JOB: QUEUE_CPU,
    TASK_WEBHOOK: QUEUE_CPU,
    TASK_CLEANUP: QUEUE_CPU,
}
HEARTBEAT_TTL_S = 30
HEARTBEAT_EVERY_S = 5


def celery_config(settings: Settings) -> dict:
    """Celery configuration shared by the producer (service) and the consumers (workers)."""
    # An unacknowledged task (its worker died) goes to another worker after this; one that
    # outlives it would be handed out twice, so it must exceed the longest chunk task.
    visibility = settings.visibility_timeout_s
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            # look for abandoned messages every tenth of the timeout (1 to 60 s), every time
            "unacked_restore_interval": min(max(visibility // 10, 1), 60),
            "unacked_restore_throttle": 1,
        },
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": QUEUE,
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "task_time_limit": settings.task_time_limit_s,
        "task_soft_time_limit": max(settings.task_time_limit_s - 60, 1),
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "enable_utc": True,
    }


def make_celery(settings: Settings, *, main: str = "caimx") -> Celery:
    if not settings.redis_url:
        raise ValueError("CAIMX_REDIS_URL is not set; the task queue needs a Redis")
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def send(app: Celery, name: str, *args: object) -> None:
    """Queue task ``name`` on its queue (see :data:`TASK_QUEUES`) without retrying the broker."""
    app.send_task(name, args=list(args), queue=TASK_QUEUES[name], retry=False)


def heartbeat_key(hostname: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:worker:{hostname}"


def live_workers(client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> list[dict]:
    """Workers whose heartbeat key has not expired (each beats every few seconds)."""
    workers = []
    for key in client.scan_iter(match=heartbeat_key("*", prefix=prefix), count=100):
        raw = client.get(key)
        if raw:
            workers.append(json.loads(raw))
    return sorted(workers, key=lambda w: w.get("hostname", ""))


class Heartbeat:
    """A daemon thread that keeps ``{prefix}:worker:{hostname}`` alive while the worker runs."""

    def __init__(self, client: redis.Redis, hostname: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.key = heartbeat_key(hostname, prefix=prefix)
        self.info = {
            "hostname": hostname,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": time.time(),
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="caimx-heartbeat", daemon=True)

    def start(self) -> None:
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with contextlib.suppress(redis.RedisError):
            self.client.delete(self.key)

    def _beat(self) -> None:
        payload = {**self.info, "seen_at": time.time()}
        self.client.set(self.key, json.dumps(payload), ex=HEARTBEAT_TTL_S)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY_S):
            try:
                self._beat()
            except redis.RedisError:
                continue
