"""``caimx serve`` started for real: private Redis, worker and two API processes, then stopped
like Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest
from processes import stop_process

from caimx.embedded import CAIMX, find_redis_server, free_port

REPO = Path(__file__).resolve().parents[2]


def _closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIMX_")}
    env.update(CAIMX_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    return env


def test_redis_server_binary_is_found() -> None:
    path = Path(find_redis_server())
    assert path.is_file() and os.access(path, os.X_OK)


@pytest.mark.slow
def test_serve_starts_everything_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*CAIMX, "serve", "--port", str(port), "--api-workers", "2"],
            env=_env(tmp_path / "data"), cwd=REPO,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        ready = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                    if ready.status_code == 200:
                        break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        assert ready is not None and ready.status_code == 200, log.read_text()
        assert ready.json()["workers"][0]["hostname"].startswith("embedded@")
        match = re.search(r"private Redis at redis://127\.0\.0\.1:(\d+)/0", log.read_text())
        assert match, log.read_text()
        redis_port = int(match.group(1))
        assert redis_port != 6379 and not _closed(redis_port)
        assert (tmp_path / "data" / "redis").is_dir()
        assert "API keys are OFF" in log.read_text()  # one person on 127.0.0.1: no keys
        assert httpx.get(f"http://127.0.0.1:{port}/v1/jobs", timeout=5).status_code == 200
        api = [p for p in psutil.Process(process.pid).children()
               if "uvicorn" in " ".join(p.cmdline())]  # fmt: skip
        spawned = [api[0], *api[0].children()]  # uvicorn, its API processes, a resource tracker
        workers = [p for p in spawned[1:] if "resource_tracker" not in " ".join(p.cmdline())]
        assert len(api) == 1 and len(workers) == 2
    finally:
        code = stop_process(process, sig=signal.SIGINT, timeout=60)
    assert code == 0, log.read_text()
    assert "caimx: stopped" in log.read_text()
    assert _closed(port) and _closed(redis_port)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in spawned)


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    env = {**_env(tmp_path), "CAIMX_AUTH_ENABLED": "false"}
    done = subprocess.run([*CAIMX, "serve", "--host", "0.0.0.0"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "without API keys" in done.stderr


def test_worker_needs_a_redis_url(tmp_path: Path) -> None:
    done = subprocess.run([*CAIMX, "worker"], env=_env(tmp_path), cwd=REPO, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "CAIMX_REDIS_URL" in done.stderr
