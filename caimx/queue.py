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
QUEUE = "gpu"
HEARTBEAT_TTL_S = 30
HEARTBEAT_EVERY_S = 5


def celery_config(settings: Settings) -> dict:
    """Celery configuration shared by the producer (service) and the consumers (workers)."""
    # A task that outlives the visibility timeout would be handed to a second worker.
    visibility = settings.task_time_limit_s + 3600
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": {"visibility_timeout": visibility},
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
        "task_routes": {TASK_PROCESS_JOB: {"queue": QUEUE}},
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
