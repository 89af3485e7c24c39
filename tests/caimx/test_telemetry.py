"""Worker measurements in Redis, /metrics in the Prometheus format, JSON logs with job ids."""

from __future__ import annotations

import io
import json
import logging
import time
from types import SimpleNamespace

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from userkeys import bearer

from caimx.jobs import JobState, JobStore
from caimx.logging_config import configure_logging, job_context
from caimx.queue import Heartbeat
from caimx.settings import Settings
from caimx.telemetry import TaskTimer, read_metrics, record_chunk
from service.api.metrics import queue_depth
from service.app import create_app


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_chunk_histogram_and_throughput(redis_client: redis.Redis, key_prefix: str) -> None:
    for seconds in (0.05, 0.3, 0.3, 700.0):
        record_chunk(redis_client, seconds=seconds, frames=10, worker="w1", prefix=key_prefix)
    measured = read_metrics(redis_client, prefix=key_prefix)
    assert measured.chunk_count == 4 and measured.chunk_sum == pytest.approx(700.65)
    cumulative = dict(measured.chunk_buckets)
    assert cumulative[0.1] == 1 and cumulative[0.5] == 3 and cumulative[600.0] == 3
    assert cumulative[float("inf")] == 4
    assert measured.frames_total == 40
    assert measured.fps == {"w1": pytest.approx(10 / 700)}
    assert measured.gpu == {}  # no TensorFlow GPU in this process


def test_task_timer_uses_the_job_record(redis_client: redis.Redis, key_prefix: str,
                                        redis_url: str) -> None:  # fmt: skip
    store = JobStore(redis_client, writer="test", prefix=key_prefix)
    store.create("j1", model="m", input_name="a.tif", input_path="/x", movie_shape=[120, 8, 8])
    store.reset_chunks("j1", 4)
    timer = TaskTimer(redis_url, key_prefix)
    task = SimpleNamespace(name="caimx.run_chunk", request=SimpleNamespace(hostname="gpu@a"))
    timer.before("t1", task=task)
    time.sleep(0.02)
    timer.after("t1", task=task, args=("j1", "w0t0"), state="SUCCESS")
    other = SimpleNamespace(name="caimx.webhook", request=task.request)
    timer.before("t2", task=other)
    timer.after("t2", task=other, args=("j1",), state="SUCCESS")
    measured = read_metrics(redis_client, prefix=key_prefix)
    assert measured.chunk_count == 1 and measured.frames_total == 30  # 120 frames / 4 chunks
    assert "gpu@a" in measured.fps


def test_metrics_endpoint(redis_client: redis.Redis, key_prefix: str, tmp_path) -> None:
    store = JobStore(redis_client, writer="test", prefix=key_prefix)
    for job_id in ("a", "b", "c"):
        store.create(job_id, model="m", input_name="x.tif", input_path="/x")
    store.transition("b", JobState.RUNNING)
    store.transition("c", JobState.CANCELED)
    beat = Heartbeat(redis_client, "gpu@test", prefix=key_prefix)
    beat.start()
    record_chunk(redis_client, seconds=1.5, frames=50, worker="gpu@test", prefix=key_prefix)
    settings = Settings(data_dir=tmp_path, redis_url=redis_url_of(redis_client))
    try:
        with TestClient(create_app(settings, prefix=key_prefix),
                        headers=bearer(settings.redis_url, key_prefix)) as api:
            response = api.get("/metrics")
    finally:
        beat.stop()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)
    assert found[("caimx_jobs", (("state", "queued"),))] == 1
    assert found[("caimx_jobs", (("state", "running"),))] == 1
    assert found[("caimx_jobs", (("state", "canceled"),))] == 1
    assert found[("caimx_jobs", (("state", "succeeded"),))] == 0
    assert found[("caimx_workers", ())] == 1
    assert ("caimx_queue_depth", (("queue", "gpu"),)) in found
    assert ("caimx_queue_depth", (("queue", "cpu"),)) in found
    assert found[("caimx_chunk_seconds_bucket", (("le", "2.5"),))] == 1
    assert found[("caimx_chunk_seconds_count", ())] == 1
    assert found[("caimx_frames_processed_total", ())] == 50
    assert found[("caimx_worker_frames_per_second", (("worker", "gpu@test"),))] == pytest.approx(
        50 / 1.5, rel=1e-4)


def redis_url_of(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"


def test_queue_depth_counts_priority_lists(redis_client: redis.Redis, key_prefix: str) -> None:
    queue = f"{key_prefix}:q"
    redis_client.rpush(queue, "a", "b")
    redis_client.rpush(f"{queue}\x06\x166", "c")
    assert queue_depth(redis_client, queue) == 3
    redis_client.delete(queue, f"{queue}\x06\x166")


def test_json_logs_carry_the_job_id(tmp_path) -> None:
    stream = io.StringIO()
    settings = Settings(data_dir=tmp_path, log_format="json", log_level="DEBUG")
    handler = configure_logging(settings, process="worker", stream=stream)
    try:
        log = logging.getLogger("caimx.test")
        with job_context("5f0c"):
            log.info("chunk %s done", "w0t1", extra={"chunk": "w0t1", "seconds": 1.25})
        log.warning("no job here")
        try:
            raise ValueError("bad movie")
        except ValueError:
            log.exception("failed", extra={"job_id": "other"})
    finally:
        logging.getLogger().removeHandler(handler)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "chunk w0t1 done" and first["job_id"] == "5f0c"
    assert first["chunk"] == "w0t1" and first["seconds"] == 1.25
    assert first["level"] == "INFO" and first["process"] == "worker" and first["ts"].endswith("Z")
    assert "job_id" not in second
    assert third["job_id"] == "other" and "ValueError: bad movie" in third["exc"]


def test_text_logs_and_request_log(tmp_path, redis_url: str, key_prefix: str) -> None:
    stream = io.StringIO()
    settings = Settings(data_dir=tmp_path, redis_url=redis_url, log_format="json")
    with TestClient(create_app(settings, prefix=key_prefix),
                    headers=bearer(redis_url, key_prefix)) as api:
        handler = configure_logging(settings, process="api", stream=stream)
        try:
            assert api.get("/v1/jobs/0123456789abcdef0123456789abcdef").status_code == 404
        finally:
            logging.getLogger().removeHandler(handler)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [r for r in records if r["logger"] == "caimx.access"]
    assert access and access[0]["job_id"] == "0123456789abcdef0123456789abcdef"
    assert access[0]["status"] == 404 and access[0]["method"] == "GET"
