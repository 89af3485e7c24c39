"""Shared fixtures: a private Redis database, a live Celery worker, small synthetic movies.

Service and worker tests use real parts, among them a real Redis: ``CAIMX_TEST_REDIS_URL`` if set,
else the one on 127.0.0.1:6379 (``.ci/run`` starts it), else a private ``redis-server`` started for
the session. The session claims an empty database number (15 down to 1), so the developer's data
in database 0 is never touched, and empties it again at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import tifffile
from processes import stop_process
from userkeys import make_user

from caimx.embedded import Launcher, start_redis
from caimx.jobs import JobStore
from caimx.queue import live_workers
from caimx.settings import Settings

REPO = Path(__file__).resolve().parent.parent
CAIMX = [sys.executable, "-c", "import sys; from caimx.cli import main; sys.exit(main())"]
CLAIM_KEY = "caimx-test:claim"


def synthetic_movie(t: int = 120, h: int = 48, w: int = 48, *, seed: int = 0) -> np.ndarray:
    """``(t, h, w)`` uint16: Poisson background and three flashing somata, ~10 px across."""
    rng = np.random.default_rng(seed)
    movie = rng.poisson(20, (t, h, w)).astype(np.float32)
    yy, xx = np.mgrid[:h, :w]
    kernel = np.exp(-np.arange(20) / 5.0)
    for cy, cx in ((h // 4, w // 4), (h // 2 + 6, w // 2 + 8), (3 * h // 4, w // 5)):
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 20.0)
        spikes = np.zeros(t)
        spikes[rng.integers(0, max(t - 10, 1), 6)] = 1.0
        activity = np.convolve(spikes, kernel)[:t]
        movie += 200.0 * activity[:, None, None] * blob
    return movie.astype(np.uint16)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``CAIMX_TEST_REDIS_URL``, else the Redis on 127.0.0.1:6379, else a private one.

    ``CAIMX_TEST_REDIS_URL=private`` always starts a private one.
    """
    configured = os.environ.get("CAIMX_TEST_REDIS_URL", "")
    if configured and configured != "private":
        yield configured.rstrip("/")
        return
    if not configured:
        local = redis.Redis.from_url("redis://127.0.0.1:6379", socket_connect_timeout=1)
        try:
            local.ping()
            yield "redis://127.0.0.1:6379"
            return
        except redis.ConnectionError:
            pass
        finally:
            local.close()
    launcher = Launcher()
    folder = tmp_path_factory.mktemp("redis")
    try:
        url = start_redis(launcher, Settings(data_dir=folder), env=dict(os.environ))
        yield url.rsplit("/", 1)[0]
    finally:
        launcher.stop()


@contextlib.contextmanager
def claimed_database(base: str) -> Iterator[str]:
    """URL of an empty database of the Redis at ``base``, claimed for the caller and emptied
    again afterwards (queues and jobs there are seen by no other worker or test session)."""
    token = uuid.uuid4().hex
    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{base}/{db}")
        try:
            if client.dbsize() == 0 and client.set(CLAIM_KEY, token, nx=True, ex=3600):
                break
        except redis.ConnectionError as exc:
            pytest.fail(f"no Redis at {base} ({exc}); start one or run .ci/run")
        finally:
            client.close()
    else:
        pytest.fail(f"every database 1..15 of {base} is in use; cannot isolate the tests")
    url = f"{base}/{db}"
    try:
        yield url
    finally:
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def redis_url(redis_server: str) -> Iterator[str]:
    """URL of a database of the test Redis that this session owns."""
    with claimed_database(redis_server) as url:
        yield url


@pytest.fixture(scope="module")
def spare_redis_url(redis_server: str) -> Iterator[str]:
    """A second database of the test Redis, for a worker that must not share the session's
    queues (a worker configured otherwise than the session's)."""
    with claimed_database(redis_server) as url:
        yield url


@pytest.fixture(scope="session")
def api_key(redis_url: str) -> str:
    """The key of user ``tester`` in the default key prefix (APIs started without a prefix)."""
    return make_user(redis_url)


@pytest.fixture(scope="session")
def auth_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key namespace of this test alone; its keys are deleted afterwards."""
    prefix = f"caimx-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}:*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Storage shared by the API and the worker of this session (uploads, results)."""
    return tmp_path_factory.mktemp("caimx-data")


WEBHOOK_SECRET = "test-webhook-secret"


S3_BUCKET = "caimx-test-rigs"
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "caimx-test", "AWS_SECRET_ACCESS_KEY": "caimx-test",
                  "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """Where the session's S3-compatible server (:func:`s3_server`) listens once it is started."""
    from caimx.embedded import free_port

    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def settings(data_dir: Path, redis_url: str, s3_endpoint: str) -> Settings:
    return Settings(data_dir=data_dir, redis_url=redis_url, webhook_secret=WEBHOOK_SECRET,
                    webhook_backoff_s=0.2, webhook_timeout_s=5,
                    remote_allowed_prefixes=[f"s3://{S3_BUCKET}/rigs/"],
                    remote_options={"s3": {"endpoint_url": s3_endpoint}})  # fmt: skip


@pytest.fixture(scope="session")
def s3_server(s3_endpoint: str) -> Iterator[str]:
    """A local S3-compatible server (moto) with the bucket :data:`S3_BUCKET`; yields its URL.

    Its credentials are test values, set in this process's environment (and the worker's, see
    :func:`process_env`) unless real ones are there.
    """
    from moto.server import ThreadedMotoServer

    for key, value in S3_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    port = int(s3_endpoint.rsplit(":", 1)[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        import boto3

        boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
            Bucket=S3_BUCKET)
        yield s3_endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_put(s3_server: str):
    """``put(key, data)``: store ``data`` as ``key`` in :data:`S3_BUCKET`; returns its s3:// URL."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")

    def put(key: str, data: bytes) -> str:
        client.put_object(Bucket=S3_BUCKET, Key=key, Body=data)
        return f"s3://{S3_BUCKET}/{key}"

    return put


def process_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIMX_")}
    env.update(
        CAIMX_DATA_DIR=str(settings.data_dir),
        CAIMX_REDIS_URL=settings.redis_url or "",
        CAIMX_MODELS_DIR=str(settings.models_dir),
        CAIMX_WEBHOOK_BACKOFF_S=str(settings.webhook_backoff_s),
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    if settings.webhook_secret is not None:
        env["CAIMX_WEBHOOK_SECRET"] = settings.webhook_secret.get_secret_value()
    env["CAIMX_REMOTE_ALLOWED_PREFIXES"] = json.dumps(settings.remote_allowed_prefixes)
    env["CAIMX_REMOTE_OPTIONS"] = json.dumps(settings.remote_options)
    for key, value in S3_CREDENTIALS.items():  # for the test's local S3 server only
        env.setdefault(key, value)
    return env


@pytest.fixture(scope="session")
def celery_worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``caimx worker`` subprocess on the session's Redis; yields its node name."""
    with running_worker(settings, process_env(settings), tmp_path_factory.mktemp("worker-log"),
                        ) as name:  # fmt: skip
        yield name


@pytest.fixture(scope="session")
def worker_launcher():
    """:func:`running_worker` and :func:`process_env`, for tests that start a worker of their
    own: ``start, env = worker_launcher``."""
    return running_worker, process_env


@contextlib.contextmanager
def running_worker(settings: Settings, env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """``caimx worker`` started with ``env`` on ``settings``' Redis, until the block ends;
    yields its node name once it has joined."""
    name = f"test-{uuid.uuid4().hex[:8]}@localhost"
    log = log_dir / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*CAIMX, "worker", "--name", name, "--loglevel", "INFO"],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + 60
        while not any(w["hostname"] == name for w in live_workers(client)):
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process(process)
                pytest.fail(f"the worker did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        yield name
    finally:
        stop_process(process)
        client.close()
        if process.returncode not in (0, -signal.SIGTERM):
            print(log.read_text()[-4000:], file=sys.stderr)


@pytest.fixture
def job_store(redis_client: redis.Redis, key_prefix: str) -> JobStore:
    return JobStore(redis_client, writer="test", prefix=key_prefix)


@pytest.fixture
def movie_tiff(tmp_path: Path) -> Path:
    """A 120-frame 48x48 uint16 multi-page TIFF: bigger than one 100x32x32 network patch."""
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, synthetic_movie())
    return path


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    from caimx.embedded import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))  # fmt: skip
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="session")
def serve_live():
    """:func:`live_server`, for tests in other folders (their own conftest shadows this one)."""
    return live_server


@pytest.fixture
def make_movie():
    """:func:`synthetic_movie`, for tests in other folders."""
    return synthetic_movie
