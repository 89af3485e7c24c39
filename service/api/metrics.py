"""``GET /metrics``: the service's state in the Prometheus text format.

Everything is read from Redis at scrape time (queue lists, job records, worker heartbeats and
the measurements workers leave there, see :mod:`caimx.telemetry`), so any API replica answers
for the whole deployment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import redis
from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from caimx.jobs import JobState, JobStore
from caimx.queue import QUEUES, live_workers
from caimx.telemetry import read_metrics
from service.deps import PrefixDep, RedisDep

router = APIRouter(tags=["health"])
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which every Prometheus version reads (all names here are ASCII)."""
PRIORITY_SEPARATOR = "\x06\x16"  # kombu's Redis transport: "<queue>\x06\x16<priority>"
PRIORITY_STEPS = (3, 6, 9)


def queue_depth(client: redis.Redis, queue: str) -> int:
    """Messages waiting in ``queue`` (all priority lists of kombu's Redis transport)."""
    names = [queue, *(f"{queue}{PRIORITY_SEPARATOR}{p}" for p in PRIORITY_STEPS)]
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(name)
        return int(sum(pipe.execute()))


def jobs_by_state(client: redis.Redis, prefix: str) -> Counter:
    store = JobStore(client, writer="metrics", prefix=prefix)
    ids = client.zrange(store.index_key, 0, -1)
    with client.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(store.key(job_id), "state")
        states = pipe.execute() if ids else []
    return Counter(state for state in states if state)


class CaimxCollector(Collector):
    """Reads Redis once per scrape."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client, self.prefix = client, prefix

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("caimx_queue_depth", "Tasks waiting in each queue",
                                  labels=["queue"])  # fmt: skip
        for queue in QUEUES:
            depth.add_metric([queue], queue_depth(self.client, queue))
        yield depth

        counts = jobs_by_state(self.client, self.prefix)
        jobs = GaugeMetricFamily("caimx_jobs", "Jobs in the store by state", labels=["state"])
        for state in JobState:
            jobs.add_metric([str(state)], counts.get(str(state), 0))
        yield jobs

        workers = live_workers(self.client, prefix=self.prefix)
        yield GaugeMetricFamily("caimx_workers", "Workers with a live heartbeat",
                                value=len(workers))  # fmt: skip

        measured = read_metrics(self.client, prefix=self.prefix)
        buckets = [(("+Inf" if b == float("inf") else f"{b:g}"), n)
                   for b, n in measured.chunk_buckets]  # fmt: skip
        yield HistogramMetricFamily("caimx_chunk_seconds", "Duration of finished chunk tasks",
                                    buckets=buckets, sum_value=measured.chunk_sum)  # fmt: skip
        yield CounterMetricFamily("caimx_frames_processed", "Movie frames processed by workers",
                                  value=measured.frames_total)  # fmt: skip
        fps = GaugeMetricFamily("caimx_worker_frames_per_second",
                                "Throughput of each worker's latest task (last 60 s)",
                                labels=["worker"])  # fmt: skip
        for worker, value in sorted(measured.fps.items()):
            fps.add_metric([worker], value)
        yield fps
        gpu = GaugeMetricFamily("caimx_gpu_memory_bytes",
                                "GPU memory held by TensorFlow in each worker (when it has a GPU)",
                                labels=["worker", "device", "kind"])  # fmt: skip
        for worker, devices in sorted(measured.gpu.items()):
            for device in devices:
                for kind in ("current", "peak"):
                    gpu.add_metric([worker, device["device"], kind], device.get(kind, 0))
        yield gpu


def render(client: redis.Redis, prefix: str) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CaimxCollector(client, prefix))
    return generate_latest(registry)


@router.get("/metrics", summary="Prometheus metrics: queues, jobs, workers, chunk latency, GPU",
            response_class=Response,
            responses={200: {"content": {CONTENT_TYPE: {}}}})  # fmt: skip
async def metrics(client: RedisDep, prefix: PrefixDep) -> Response:
    body = await run_in_threadpool(render, client, prefix)
    return Response(body, media_type=CONTENT_TYPE)
