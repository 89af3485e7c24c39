"""Parts that the reliability tests kill: a private Redis with AOF, worker and API processes.

Each test gets its own ``redis-server`` (append-only file, as docs/operations.md asks for in
production), its own data folder and its own ``caimx worker`` subprocesses, so killing any of them
touches nothing else of the test session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import zarr

from caimx.embedded import find_redis_server, free_port
from caimx.queue import live_workers
from caimx.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CAIMX = [sys.executable, "-c", "import sys; from caimx.cli import main; sys.exit(main())"]


@dataclass
class RedisServer:
    """A ``redis-server`` with AOF persistence that a test may stop, kill and start again."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--protected-mode", "yes",
                "--logfile", str(self.folder / "redis.log")]  # fmt: skip
        self.process = subprocess.Popen(argv, start_new_session=True)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError((self.folder / "redis.log").read_text()) from None
                time.sleep(0.05)
        client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.process = None


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIMX_")}
    env.update(CAIMX_DATA_DIR=str(settings.data_dir), CAIMX_REDIS_URL=settings.redis_url or "",
               CAIMX_MODELS_DIR=str(settings.models_dir),
               CAIMX_VISIBILITY_TIMEOUT_S=str(settings.visibility_timeout_s),
               CAIMX_MAX_ATTEMPTS=str(settings.max_attempts),
               PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")  # fmt: skip
    if settings.tiles_per_chunk:
        env["CAIMX_TILES_PER_CHUNK"] = str(settings.tiles_per_chunk)
    if settings.allowed_roots:
        env["CAIMX_ALLOWED_ROOTS"] = "[" + ",".join(f'"{r}"' for r in settings.allowed_roots) + "]"
    env.update(extra)
    return env


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once (no cleanup of any kind)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_worker(settings: Settings, started: list[Worker], *, wait: bool = True,
                 hold: Path | None = None) -> Worker:
    """A ``caimx worker`` process; with ``hold``, one that stops a chunk in its middle once
    ``hold / "armed"`` exists (see ``held_worker.py``)."""
    name = f"rel-{uuid.uuid4().hex[:6]}@localhost"
    log = settings.data_dir.parent / f"{name.split('@')[0]}.log"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    command, extra = CAIMX, {}
    if hold is not None:
        command = [sys.executable, str(Path(__file__).with_name("held_worker.py"))]
        extra = {"RELIABILITY_HOLD_DIR": str(hold)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "worker", "--name", name, "--loglevel", "INFO", "--concurrency", "1"],
            env=process_env(settings, **extra), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    worker = Worker(name, process, log)
    started.append(worker)
    if wait:
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        deadline = time.monotonic() + 90
        while not any(w["hostname"] == name for w in live_workers(client)):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        client.close()
    return worker


def result_arrays(settings: Settings, job_id: str) -> dict[str, np.ndarray]:
    group = zarr.open_group(settings.results_dir / job_id / "result.zarr", mode="r")
    return {name: group[name][:] for name in ("footprints", "traces")}


def start_api(settings: Settings, port: int, log: Path) -> subprocess.Popen:
    """``uvicorn service.app:create_app`` in its own process on ``port``, once it answers."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port)],
            env=process_env(settings), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log.read_text()[-3000:])
        time.sleep(0.1)
