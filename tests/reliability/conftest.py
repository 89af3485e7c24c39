"""Fixtures of the reliability tests: a private Redis with AOF, workers, a user."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_parts import RedisServer, Worker
from userkeys import make_user

from caimx.settings import Settings


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    """Start workers with ``start_worker(settings)``; all are stopped at the end."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
def rel_settings(tmp_path: Path, private_redis: RedisServer) -> Settings:
    return Settings(data_dir=tmp_path / "data", redis_url=private_redis.url,
                    visibility_timeout_s=8, max_attempts=3)  # fmt: skip


@pytest.fixture
def rel_key(private_redis: RedisServer) -> str:
    return make_user(private_redis.url, name="lab")
