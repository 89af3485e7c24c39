"""A live API (uvicorn on 127.0.0.1) next to the session's real Celery worker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from caimx.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def web_server(settings: Settings, celery_worker: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # fmt: skip
    """Base URL of ``uvicorn service.app:create_app`` sharing Redis and storage with the worker."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIMX_")}
    env.update(CAIMX_DATA_DIR=str(settings.data_dir), CAIMX_REDIS_URL=settings.redis_url or "",
               CAIMX_MODELS_DIR=str(settings.models_dir), PYTHONUNBUFFERED="1")  # fmt: skip
    log = tmp_path_factory.mktemp("api-log") / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the API did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def artifacts() -> Path:
    """``tests/artifacts`` (git-ignored): screenshots a person can look at after the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
