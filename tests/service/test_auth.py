"""API keys, per-user isolation, limits, CORS and secrets in logs, against a real Redis."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from userkeys import make_user

from caimx.jobs import JobState, JobStore
from caimx.settings import Settings
from caimx.users import UserStore, mask
from service.app import create_app

PROBLEM = "application/problem+json"
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}
REPO = Path(__file__).resolve().parents[2]


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return response.json()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def app_client(api_settings: Settings, key_prefix: str) -> Iterator[TestClient]:
    """An API without default credentials: each request says who it is."""
    with TestClient(create_app(api_settings, prefix=key_prefix)) as client:
        yield client


@pytest.fixture
def keys(redis_url: str, key_prefix: str) -> dict[str, str]:
    return {"alice": make_user(redis_url, key_prefix, "alice"),
            "bob": make_user(redis_url, key_prefix, "bob"),
            "root": make_user(redis_url, key_prefix, "root", admin=True)}  # fmt: skip


def finished_job(store: JobStore, settings: Settings, owner: str) -> str:
    """A succeeded job of ``owner`` with a small result group on disk."""
    from exports.small_result import write_small_result

    job_id = store.new_id()
    result = write_small_result(settings.results_dir / job_id / "result.zarr")
    store.create(job_id, model="deepcaimx-mini", input_name="movie.tif", input_path="/nowhere",
                 movie_shape=[50, 40, 36], movie_dtype="uint16", movie_fps=30.0,
                 owner=owner)  # fmt: skip
    store.transition(job_id, JobState.RUNNING, started_at=time.time())
    store.transition(job_id, JobState.SUCCEEDED, finished_at=time.time(), result_path=str(result))
    return job_id


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs/abc"),
    ("GET", "/v1/jobs/abc/zarr/zarr.json"), ("GET", "/v1/jobs/abc/result.zip"),
    ("GET", "/v1/jobs/abc/preview"), ("GET", "/v1/jobs/abc/export/nwb"),
    ("POST", "/v1/uploads"), ("HEAD", "/v1/uploads/abc"), ("DELETE", "/v1/jobs/abc"),
    ("GET", "/metrics"),
])  # fmt: skip
def test_every_endpoint_needs_a_key(app_client: TestClient, method: str, path: str) -> None:
    response = app_client.request(method, path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="caimx"')
    if method != "HEAD":
        assert problem(response, 401)["type"] == "urn:caimx:problem:unauthorized"


@pytest.mark.parametrize("header", [
    "Bearer caimx_0123456789abcdef_" + "x" * 43, "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer",
])  # fmt: skip
def test_a_wrong_key_is_401(app_client: TestClient, keys: dict, header: str) -> None:
    response = app_client.get("/v1/jobs", headers={"Authorization": header})
    problem(response, 401)
    assert "Bearer" in response.headers["www-authenticate"]


def test_open_endpoints(app_client: TestClient) -> None:
    for path in ("/healthz", "/docs", "/openapi.json", "/", "/static/app.js"):
        assert app_client.get(path).status_code == 200, path
    schema = app_client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_jobs_results_and_uploads_are_the_owners_alone(
    app_client: TestClient, keys: dict, api_settings: Settings, redis_client, key_prefix: str,
) -> None:  # fmt: skip
    store = JobStore(redis_client, writer="test", prefix=key_prefix)
    alices = finished_job(store, api_settings, "alice")
    bobs = finished_job(store, api_settings, "bob")
    alice, bob, root = auth(keys["alice"]), auth(keys["bob"]), auth(keys["root"])
    for suffix in ("", "/result", "/zarr/zarr.json", "/result.zip", "/preview", "/export/tiff"):
        assert app_client.get(f"/v1/jobs/{alices}{suffix}", headers=alice).status_code == 200
        assert app_client.get(f"/v1/jobs/{alices}{suffix}", headers=root).status_code == 200
        other = app_client.get(f"/v1/jobs/{alices}{suffix}", headers=bob)
        assert problem(other, 404)["type"] == "urn:caimx:problem:unknown-job", suffix
    assert app_client.head(f"/v1/jobs/{alices}/zarr/zarr.json", headers=bob).status_code == 404
    for verb, path in (("POST", f"/v1/jobs/{alices}:cancel"), ("DELETE", f"/v1/jobs/{alices}")):
        problem(app_client.request(verb, path, headers=bob), 404)

    def listed(headers: dict) -> set[str]:
        return {j["id"] for j in app_client.get("/v1/jobs", headers=headers).json()["jobs"]}

    assert listed(alice) == {alices} and listed(bob) == {bobs}
    assert listed(root) == {alices, bobs}

    created = app_client.post("/v1/uploads", headers={**alice, **TUS, "Upload-Length": "10"})
    upload_id = created.json()["id"]
    for verb in ("HEAD", "GET"):
        assert app_client.request(verb, f"/v1/uploads/{upload_id}",
                                  headers={**bob, **TUS}).status_code == 404  # fmt: skip
    patch = app_client.patch(f"/v1/uploads/{upload_id}", content=b"0123456789",
                             headers={**bob, **OCTETS, "Upload-Offset": "0"})  # fmt: skip
    problem(patch, 404)
    problem(app_client.delete(f"/v1/uploads/{upload_id}", headers={**bob, **TUS}), 404)
    stolen = app_client.post("/v1/jobs", headers=bob, json={"source": {"upload_id": upload_id}})
    assert problem(stolen, 404)["type"] == "urn:caimx:problem:unknown-upload"
    assert app_client.head(f"/v1/uploads/{upload_id}", headers={**alice, **TUS}).status_code == 200


def test_idempotency_keys_are_per_user(app_client: TestClient, keys: dict, redis_client,
                                       key_prefix: str) -> None:  # fmt: skip
    from service import idempotency

    first = idempotency.reserve(redis_client, key_prefix, "k1", job_id="a", owner="alice")
    second = idempotency.reserve(redis_client, key_prefix, "k1", job_id="b", owner="bob")
    assert not first.replay and not second.replay and first.key != second.key


def test_keys_are_stored_only_as_salted_hashes(redis_client, key_prefix: str) -> None:
    users = UserStore(redis_client, prefix=key_prefix)
    one, two = users.add("carol"), users.add("dave")
    secret = one.key.split("_", 2)[2]  # caimx_<id>_<secret>; the secret may hold "_"
    for name in redis_client.scan_iter(match=f"{key_prefix}:*"):
        kind = redis_client.type(name)
        values = (redis_client.hvals(name) if kind == "hash" else
                  [redis_client.get(name)] if kind == "string" else [])  # fmt: skip
        assert not any(secret in (v or "") for v in values), name
    carol, dave = (redis_client.hgetall(users.key(n)) for n in ("carol", "dave"))
    assert carol["salt"] != dave["salt"] and carol["kdf"].startswith("scrypt:")
    assert users.verify(one.key).name == "carol" and users.verify(two.key).name == "dave"
    assert users.verify(one.key[:-1] + ("A" if one.key[-1] != "A" else "B")) is None
    assert mask(one.key) == f"caimx_{one.user.key_id}_***" and secret not in mask(one.key)


def test_a_new_key_used_by_many_requests_at_once_costs_one_scrypt(
    redis_client, key_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import threading

    import caimx.users

    users = UserStore(redis_client, prefix=key_prefix)
    key = users.add("judy").key
    hashed = []
    real_hash = caimx.users._hash
    monkeypatch.setattr(caimx.users, "_hash", lambda *a: hashed.append(1) or real_hash(*a))
    start = threading.Barrier(16)
    names = []

    def check() -> None:
        start.wait()
        names.append(UserStore(redis_client, prefix=key_prefix).verify(key).name)

    threads = [threading.Thread(target=check) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert names == ["judy"] * 16 and len(hashed) == 1
    assert users.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None  # still checked


def test_removed_or_replaced_keys_stop_working_at_once(app_client: TestClient, redis_client,
                                                       key_prefix: str) -> None:  # fmt: skip
    users = UserStore(redis_client, prefix=key_prefix)
    old = users.add("erin").key
    assert app_client.get("/v1/jobs", headers=auth(old)).status_code == 200
    new = users.add("erin", replace=True).key
    problem(app_client.get("/v1/jobs", headers=auth(old)), 401)
    assert app_client.get("/v1/jobs", headers=auth(new)).status_code == 200
    users.remove("erin")
    problem(app_client.get("/v1/jobs", headers=auth(new)), 401)


def test_too_many_active_jobs_is_429(api_settings: Settings, key_prefix: str, redis_url: str,
                                     redis_client) -> None:  # fmt: skip
    settings = api_settings.model_copy(update={"max_active_jobs_per_user": 2})
    store = JobStore(redis_client, writer="test", prefix=key_prefix)
    for _ in range(2):
        store.create(store.new_id(), model="m", input_name="a", input_path="/a", owner="frank")
    key = make_user(redis_url, key_prefix, "frank")
    with TestClient(create_app(settings, prefix=key_prefix), headers=auth(key)) as client:
        response = client.post("/v1/jobs", json={"source": {"path": "x.tif"}})
        assert problem(response, 429)["type"] == "urn:caimx:problem:quota-exceeded"
        assert int(response.headers["retry-after"]) > 0
        store.transition(store.list_ids()[0], JobState.CANCELED)
        again = client.post("/v1/jobs", json={"source": {"path": "x.tif"}})
        assert again.status_code == 403  # past the limit check: no allowed roots here


def test_upload_bytes_per_day_and_storage_quota_are_429(
    api_settings: Settings, key_prefix: str, redis_url: str,
) -> None:  # fmt: skip
    settings = api_settings.model_copy(update={"max_upload_bytes_per_day": 1000,
                                               "storage_quota_bytes": 10_000})  # fmt: skip
    key = make_user(redis_url, key_prefix, "grace")
    with TestClient(create_app(settings, prefix=key_prefix), headers=auth(key)) as client:
        ok = client.post("/v1/uploads", headers={**TUS, "Upload-Length": "600"})
        assert ok.status_code == 201
        over = client.post("/v1/uploads", headers={**TUS, "Upload-Length": "600"})
        body = problem(over, 429)
        assert "today" in body["detail"] and 0 < int(over.headers["retry-after"]) <= 86400
        multipart = client.post("/v1/jobs", files={"file": ("m.tif", b"x" * 700)})
        problem(multipart, 429)
    settings = api_settings.model_copy(update={"storage_quota_bytes": 1000})
    with TestClient(create_app(settings, prefix=key_prefix), headers=auth(key)) as client:
        full = client.post("/v1/uploads", headers={**TUS, "Upload-Length": "500"})
        body = problem(full, 429)  # 600 kept + 500 > 1000
        assert "quota" in body["detail"] and int(full.headers["retry-after"]) > 0


def test_a_users_own_limits_replace_the_settings(api_settings: Settings, key_prefix: str,
                                                 redis_url: str, redis_client) -> None:  # fmt: skip
    settings = api_settings.model_copy(update={"max_active_jobs_per_user": 1,
                                               "max_upload_bytes_per_day": 1000})  # fmt: skip
    store = JobStore(redis_client, writer="test", prefix=key_prefix)
    store.create(store.new_id(), model="m", input_name="a", input_path="/a", owner="heidi")
    heidi = make_user(redis_url, key_prefix, "heidi")
    ivan = make_user(redis_url, key_prefix, "ivan")
    users = UserStore(redis_client, prefix=key_prefix)
    job = {"source": {"path": "x.tif"}}
    big_upload = {**TUS, "Upload-Length": "5000"}
    with TestClient(create_app(settings, prefix=key_prefix), headers=auth(heidi)) as client:
        problem(client.post("/v1/jobs", json=job), 429)  # the setting: 1 active job
        users.set_limits("heidi", active_jobs=3)
        assert client.post("/v1/jobs", json=job).status_code == 403  # past the limit check
        assert problem(client.post("/v1/uploads", headers=big_upload), 429)["limit"] == 1000
        users.set_limits("heidi", upload_bytes_per_day=0)  # 0: no limit for her
        assert client.post("/v1/uploads", headers=big_upload).status_code == 201
        users.set_limits("heidi", storage_bytes=6000)
        full = problem(client.post("/v1/uploads", headers=big_upload), 429)
        assert full["limit"] == 6000 and full["used"] == 5000
        users.set_limits("heidi", active_jobs=None)  # back to the setting
        problem(client.post("/v1/jobs", json=job), 429)
        assert problem(client.post("/v1/uploads", headers={**big_upload, **auth(ivan)}),
                       429)["limit"] == 1000  # others keep the settings  # fmt: skip
    assert users.get("heidi").limits.upload_bytes_per_day == 0


def test_cors_is_off_unless_configured(api_settings: Settings, key_prefix: str,
                                       auth_headers: dict) -> None:  # fmt: skip
    preflight = {"Origin": "https://lab.example", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}  # fmt: skip
    with TestClient(create_app(api_settings, prefix=key_prefix)) as client:
        response = client.get("/healthz", headers={"Origin": "https://lab.example"})
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-origin" not in client.options("/v1/jobs",
                                                                   headers=preflight).headers
    settings = api_settings.model_copy(update={"cors_origins": ["https://lab.example"]})
    with TestClient(create_app(settings, prefix=key_prefix)) as client:
        response = client.options("/v1/jobs", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://lab.example"
        other = client.options("/v1/jobs", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_auth_off_only_on_loopback(api_settings: Settings, key_prefix: str,
                                   caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    for host in ("0.0.0.0", "10.1.2.3"):
        with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
            create_app(api_settings.model_copy(update={"auth_enabled": False, "host": host}))
    settings = api_settings.model_copy(update={"auth_enabled": False})
    with caplog.at_level(logging.WARNING), \
            TestClient(create_app(settings, prefix=key_prefix)) as client:  # fmt: skip
        assert client.get("/v1/jobs").status_code == 200
    assert "AUTHENTICATION IS OFF" in caplog.text


def test_serve_refuses_auth_off_on_a_public_address() -> None:
    from caimx.embedded import LaunchError, auth_for_serve

    assert auth_for_serve("127.0.0.1", {}) is False
    assert auth_for_serve("0.0.0.0", {}) is True
    assert auth_for_serve("127.0.0.1", {"CAIMX_AUTH_ENABLED": "true"}) is True
    with pytest.raises(LaunchError, match="without API keys"):
        auth_for_serve("0.0.0.0", {"CAIMX_AUTH_ENABLED": "false"})


def test_no_secrets_in_logs_or_settings(app_client: TestClient, keys: dict,
                                        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    settings = Settings(webhook_secret="hush-hush", redis_url="redis://127.0.0.1:6379/0")
    assert "hush-hush" not in repr(settings) and "hush-hush" not in str(settings.model_dump())
    with caplog.at_level(logging.DEBUG):
        app_client.get("/v1/jobs", headers=auth(keys["alice"]))
        app_client.get("/v1/jobs/nope", headers=auth(keys["alice"]))
        app_client.get("/v1/jobs", headers=auth(keys["alice"] + "x"))
    secret = keys["alice"].split("_", 2)[2]  # caimx_<id>_<secret>; the secret may hold "_"
    assert caplog.records and secret not in caplog.text


def test_users_command(redis_url: str, tmp_path: Path) -> None:
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIMX_")}
    env["CAIMX_REDIS_URL"] = redis_url
    run = [sys.executable, "-c", "import sys; from caimx.cli import main; sys.exit(main())",
           "users"]  # fmt: skip

    def caimx(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*run, *args], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    added = caimx("add", "cli-user", "--admin")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip().splitlines()[-1]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert UserStore(client).verify(key).admin
        assert caimx("add", "cli-user").returncode == 2  # exists
        listing = caimx("list")
        assert "cli-user\tadmin" in listing.stdout and key not in listing.stdout
        limited = caimx("limits", "cli-user", "--active-jobs", "5", "--storage", "2GiB")
        assert limited.returncode == 0, limited.stderr
        assert "active jobs:      5 (own)" in limited.stdout
        assert UserStore(client).get("cli-user").limits.storage_bytes == 2 * 1024**3
        assert caimx("limits", "cli-user", "--storage", "default").returncode == 0
        assert UserStore(client).get("cli-user").limits.storage_bytes is None
        assert "(service default)" in caimx("limits", "cli-user").stdout
        assert caimx("limits", "cli-user", "--active-jobs", "-1").returncode == 2
        assert caimx("limits", "nobody", "--active-jobs", "1").returncode == 2
        assert caimx("remove", "cli-user").returncode == 0
        assert UserStore(client).verify(key) is None
        assert caimx("remove", "cli-user").returncode == 2
    finally:
        client.close()
