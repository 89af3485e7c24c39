"""Worker measurements kept in Redis, so the API can serve them at ``/metrics``.

The worker records, through Celery's task signals (no change to the task code):

- each finished chunk task's duration into a histogram (``{prefix}:metrics:chunk_seconds``, a
  hash of per-bucket counts plus ``count`` and ``sum``);
- the movie frames its tasks covered (``{prefix}:metrics:frames_total``): a chunk counts for
  ``frames / chunks_total`` of its job's movie, a whole-job task for all its frames;
- its latest throughput in frames/s (``{prefix}:metrics:fps:<worker>``, expires after 60 s);
- GPU memory in use and at peak, when TensorFlow is loaded and sees a GPU
  (``{prefix}:metrics:gpu:<worker>``, a hash, expires after 60 s).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from caimx.jobs import DEFAULT_PREFIX

log = logging.getLogger(__name__)
CHUNK_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
LIVE_TTL_S = 60
TIMED_TASKS = ("caimx.run_chunk", "caimx.process_job")


def metrics_key(name: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:metrics:{name}"


def record_chunk(client: redis.Redis, *, seconds: float, frames: float, worker: str,
                 prefix: str = DEFAULT_PREFIX, chunk: bool = True) -> None:  # fmt: skip
    """Add one finished task: ``seconds`` of work covering ``frames`` movie frames."""
    with client.pipeline(transaction=False) as pipe:
        if chunk:
            key = metrics_key("chunk_seconds", prefix=prefix)
            bucket = next((b for b in CHUNK_BUCKETS if seconds <= b), "inf")
            pipe.hincrby(key, f"le:{bucket}", 1)
            pipe.hincrby(key, "count", 1)
            pipe.hincrbyfloat(key, "sum", float(seconds))
        if frames > 0:
            pipe.incrbyfloat(metrics_key("frames_total", prefix=prefix), float(frames))
            if seconds > 0:
                pipe.set(metrics_key(f"fps:{worker}", prefix=prefix),
                         f"{frames / seconds:.6g}", ex=LIVE_TTL_S)  # fmt: skip
        pipe.execute()


def gpu_memory() -> list[dict[str, Any]]:
    """``[{"device", "current", "peak"}]`` in bytes per GPU; empty without TensorFlow or a GPU.

    Never imports TensorFlow: only a process that has already loaded it is asked.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return []
    found = []
    try:
        for index, _ in enumerate(tf.config.list_physical_devices("GPU")):
            info = tf.config.experimental.get_memory_info(f"GPU:{index}")
            found.append({"device": f"GPU:{index}", "current": int(info.get("current", 0)),
                          "peak": int(info.get("peak", 0))})  # fmt: skip
    except Exception:  # no GPU runtime, or a TensorFlow without memory info: skip quietly
        return []
    return found


def record_gpu(client: redis.Redis, *, worker: str, prefix: str = DEFAULT_PREFIX) -> None:
    devices = gpu_memory()
    if devices:
        client.set(metrics_key(f"gpu:{worker}", prefix=prefix), json.dumps(devices),
                   ex=LIVE_TTL_S)  # fmt: skip


@dataclass
class TaskTimer:
    """Celery ``task_prerun``/``task_postrun`` handlers that call :func:`record_chunk`."""

    redis_url: str
    prefix: str = DEFAULT_PREFIX
    started: dict[str, float] = field(default_factory=dict)
    _client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:  # one per worker process, made after the pool forked
            self._client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        return self._client

    def before(self, task_id: str, task: Any = None, **_: Any) -> None:
        if getattr(task, "name", None) in TIMED_TASKS:
            self.started[task_id] = time.perf_counter()

    def after(self, task_id: str, task: Any = None, args: tuple = (), state: str | None = None,
              **_: Any) -> None:  # fmt: skip
        start = self.started.pop(task_id, None)
        if start is None or state != "SUCCESS" or not args:
            return
        seconds = time.perf_counter() - start
        worker = getattr(getattr(task, "request", None), "hostname", None) or "worker"
        try:
            is_chunk = task.name == "caimx.run_chunk"
            frames = self._frames(str(args[0]), per_chunk=is_chunk)
            record_chunk(self.client, seconds=seconds, frames=frames, worker=worker,
                         prefix=self.prefix, chunk=is_chunk)  # fmt: skip
            record_gpu(self.client, worker=worker, prefix=self.prefix)
        except redis.RedisError as exc:  # measurements must never fail a job
            log.warning("could not record task metrics: %s", exc)

    def _frames(self, job_id: str, *, per_chunk: bool) -> float:
        shape, total = self.client.hmget(f"{self.prefix}:job:{job_id}",
                                         ["movie_shape", "chunks_total"])  # fmt: skip
        with contextlib.suppress(TypeError, ValueError, IndexError):
            frames = float(json.loads(shape)[0])
            if not per_chunk:
                return frames
            return frames / int(total) if total and int(total) > 0 else 0.0
        return 0.0


def install_task_metrics(redis_url: str, *, prefix: str = DEFAULT_PREFIX) -> TaskTimer:
    """Connect a :class:`TaskTimer` to Celery's task signals in this (worker) process."""
    from celery.signals import task_postrun, task_prerun

    timer = TaskTimer(redis_url, prefix)
    task_prerun.connect(timer.before, weak=False)
    task_postrun.connect(timer.after, weak=False)
    return timer


@dataclass(frozen=True)
class WorkerMetrics:
    """What :func:`read_metrics` found in Redis."""

    chunk_buckets: list[tuple[float, int]]
    """(upper bound, cumulative count), the last bound is +inf."""
    chunk_count: int
    chunk_sum: float
    frames_total: float
    fps: dict[str, float]
    gpu: dict[str, list[dict[str, Any]]]


def read_metrics(client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> WorkerMetrics:
    raw = client.hgetall(metrics_key("chunk_seconds", prefix=prefix))
    cumulative, buckets = 0, []
    for bound in (*CHUNK_BUCKETS, "inf"):
        cumulative += int(raw.get(f"le:{bound}", 0))
        buckets.append((float(bound), cumulative))
    live: dict[str, dict[str, Any]] = {"fps": {}, "gpu": {}}
    for kind in live:
        pattern = metrics_key(f"{kind}:*", prefix=prefix)
        for key in client.scan_iter(match=pattern, count=100):
            value = client.get(key)
            if value is not None:
                worker = key.split(f":{kind}:", 1)[1]
                live[kind][worker] = float(value) if kind == "fps" else json.loads(value)
    return WorkerMetrics(
        chunk_buckets=buckets, chunk_count=int(raw.get("count", 0)),
        chunk_sum=float(raw.get("sum", 0.0)),
        frames_total=float(client.get(metrics_key("frames_total", prefix=prefix)) or 0.0),
        fps=live["fps"], gpu=live["gpu"],
    )


def instrument_worker(settings: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
    """Everything a worker process needs before Celery starts: logging with job ids, metrics."""
    from caimx.logging_config import configure_logging, install_celery_job_context

    configure_logging(settings, process="worker")
    install_celery_job_context()
    install_task_metrics(settings.redis_url, prefix=prefix)
