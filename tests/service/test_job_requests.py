"""JSON job requests without a worker: referenced paths, traversal refused, parameters,
Idempotency-Key, listing with filters and cursor pages, cancel forms, the OpenAPI schema."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient
from scanimage_files import fastz_movie, fastz_settings, write_scanimage
from userkeys import bearer

from caimx.jobs import JobState, JobStore
from caimx.settings import Settings
from service.app import create_app

PROBLEM = "application/problem+json"


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed root with a rig folder in it, and a secret folder outside it."""
    root = tmp_path / "storage"
    (root / "rig3" / "2026-11-20").mkdir(parents=True)
    movie = np.random.default_rng(1).poisson(20, (40, 24, 24)).astype(np.uint16)
    tifffile.imwrite(root / "rig3" / "2026-11-20" / "mouse12_plane1.tif", movie,
                     imagej=True, metadata={"axes": "TYX", "fps": 30})  # fmt: skip
    with h5py.File(root / "rig3" / "session.h5", "w") as f:
        f.create_dataset("imaging/mov", data=movie)
    outside = tmp_path / "secret"
    outside.mkdir()
    tifffile.imwrite(outside / "other.tif", movie)
    (root / "rig3" / "escape").symlink_to(outside)
    (root / "rig3" / "escape.tif").symlink_to(outside / "other.tif")
    return root, outside


@pytest.fixture
def api(tmp_path: Path, redis_url: str, key_prefix: str, roots) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_url,
                        allowed_roots=[roots[0]], webhook_secret="s")  # fmt: skip
    with TestClient(create_app(settings, prefix=key_prefix),
                    headers=bearer(redis_url, key_prefix)) as client:
        yield client


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return response.json()


def test_a_referenced_movie_is_accepted(api: TestClient, roots) -> None:
    response = api.post("/v1/jobs", json={
        "source": {"path": "rig3/2026-11-20/mouse12_plane1.tif"},
        "params": {"pixel_size_um": 1.1, "tile": 32, "tile_overlap": 8,
                   "outputs": ["footprints", "traces", "denoised"]}})  # fmt: skip
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["movie"] == {"name": "mouse12_plane1.tif", "bytes": job["movie"]["bytes"],
                            "sha256": None, "shape": [40, 24, 24], "dtype": "uint16", "fps": 30.0,
                            "planes": 1, "plane": 0, "channels": 1, "channel": 0}
    assert job["source"] == {"kind": "path", "path": "rig3/2026-11-20/mouse12_plane1.tif"}
    assert job["links"]["cancel"] == f"/v1/jobs/{job['id']}:cancel"
    hdf5 = api.post("/v1/jobs", json={"source": {"path": "rig3/session.h5",
                                                 "dataset": "/imaging/mov"}})  # fmt: skip
    assert hdf5.status_code == 202, hdf5.text
    assert hdf5.json()["source"]["dataset"] == "/imaging/mov"
    absolute = roots[0] / "rig3" / "session.h5"
    source = {"path": str(absolute), "dataset": "imaging/mov"}
    inside = api.post("/v1/jobs", json={"source": source})
    assert inside.status_code == 202, inside.text


@pytest.mark.parametrize(("path", "status"), [
    ("../secret/other.tif", 403),
    ("rig3/../../secret/other.tif", 403),
    ("rig3/%2e%2e/%2e%2e/secret/other.tif", 422),
    ("rig3%2f..%2fsecret", 422),
    ("rig3\\..\\secret\\other.tif", 422),
    ("rig3/escape/other.tif", 403),
    ("rig3/escape.tif", 403),
    ("/etc/passwd", 403),
    ("rig3/missing.tif", 422),
])  # fmt: skip
def test_paths_outside_the_roots_are_refused(api: TestClient, roots, path: str,
                                             status: int) -> None:  # fmt: skip
    body = problem(api.post("/v1/jobs", json={"source": {"path": path}}), status)
    assert body["type"].endswith("source-forbidden" if status == 403 else "invalid-source")


def test_an_absolute_path_outside_is_refused(api: TestClient, roots) -> None:
    outside = roots[1] / "other.tif"
    problem(api.post("/v1/jobs", json={"source": {"path": str(outside)}}), 403)


def test_no_roots_no_references(tmp_path: Path, redis_url: str, key_prefix: str) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_url)
    with TestClient(create_app(settings, prefix=key_prefix),
                    headers=bearer(redis_url, key_prefix)) as client:
        body = problem(client.post("/v1/jobs", json={"source": {"path": "a.tif"}}), 403)
        assert "CAIMX_ALLOWED_ROOTS" in body["detail"]


@pytest.mark.parametrize("request_body", [
    {"source": {}},
    {"source": {"path": "a.tif", "upload_id": "0" * 32}},
    {"source": {"path": "rig3/session.h5"}, "params": {"tile": 16, "tile_overlap": 16}},
    {"source": {"path": "rig3/session.h5"}, "params": {"no_such": 1}},
    {"source": {"path": "rig3/session.h5"}, "params": {"outputs": ["movie"]}},
    {"source": {"path": "rig3/session.h5"}, "params": {"fps": -1}},
    {"source": {"path": "rig3/session.h5"}, "webhook_url": "not a url"},
])  # fmt: skip
def test_invalid_requests_are_422(api: TestClient, request_body: dict) -> None:
    body = problem(api.post("/v1/jobs", json=request_body), 422)
    assert body["type"].endswith("invalid-request") and body["errors"]


def test_movie_options_reach_the_reader(api: TestClient) -> None:
    body = problem(api.post("/v1/jobs", json={"source": {"path": "rig3/session.h5",
                                                         "dataset": "nope"}}), 422)  # fmt: skip
    assert "no dataset 'nope'" in body["detail"]


def test_derived_resampling_is_checked_when_the_job_is_made(api: TestClient, roots) -> None:
    root, _ = roots
    movie = np.random.default_rng(2).poisson(20, (40, 24, 24)).astype(np.uint16)
    tifffile.imwrite(root / "rig3" / "no_rate.tif", movie)  # no frame rate recorded
    no_rate = {"source": {"path": "rig3/no_rate.tif"}}
    body = problem(api.post("/v1/jobs", json={**no_rate, "params": {
        "model": "caimx-mini-ft", "match_frame_rate": True}}), 422)  # fmt: skip
    assert body["type"].endswith("invalid-parameters") and "frame rate" in body["detail"]
    given = api.post("/v1/jobs", json={**no_rate, "params": {
        "model": "caimx-mini-ft", "match_frame_rate": True, "fps": 60}})  # fmt: skip
    assert given.status_code == 202, given.text
    body = problem(api.post("/v1/jobs", json={**no_rate, "params": {
        "model": "deepcaimx-mini", "match_frame_rate": True, "fps": 60}}),
        422)  # the published model's card records no frame rate
    assert "frame_rate_hz in the model card" in body["detail"]
    body = problem(api.post("/v1/jobs", json={**no_rate, "params": {
        "model": "deepcaimx-mini", "rescale": True, "pixel_size_um": 0.5}}), 422)  # fmt: skip
    assert "pixel_size_um in the model card" in body["detail"]
    rescaled = api.post("/v1/jobs", json={**no_rate, "params": {
        "model": "caimx-mini-ft", "rescale": True, "pixel_size_um": 0.5}})  # fmt: skip
    assert rescaled.status_code == 202, rescaled.text


def test_a_plane_of_a_scanimage_recording(api: TestClient, roots) -> None:
    """3 planes + 1 fly-back frame per volume: plane 0 unless asked, the count in the job JSON,
    a plane that is not there refused with a plain 422 (JSON and multipart alike)."""
    rng = np.random.default_rng(2)
    planes = [rng.poisson(20 + 10 * z, (24, 20, 28)).astype(np.uint16) for z in range(3)]
    path = write_scanimage(roots[0] / "rig3" / "fastz_00001.tif", fastz_movie(planes),
                           fastz_settings(planes=3, flyback=1))  # fmt: skip
    default = api.post("/v1/jobs", json={"source": {"path": "rig3/fastz_00001.tif"}})
    assert default.status_code == 202, default.text
    movie = default.json()["movie"]
    assert movie["shape"] == [24, 20, 28] and movie["fps"] == 7.5
    assert (movie["planes"], movie["plane"], movie["channels"], movie["channel"]) == (3, 0, 1, 0)
    chosen = api.post("/v1/jobs", json={"source": {"path": "rig3/fastz_00001.tif", "plane": 2}})
    assert chosen.status_code == 202, chosen.text
    job = chosen.json()
    assert job["movie"]["plane"] == 2 and job["source"]["plane"] == 2
    body = problem(api.post("/v1/jobs", json={"source": {"path": "rig3/fastz_00001.tif",
                                                         "plane": 3}}), 422)  # fmt: skip
    assert body["type"].endswith("invalid-movie-option")
    assert "has 3 planes (numbered 0 to 2); there is no plane 3" in body["detail"]
    upload = api.post("/v1/jobs", files={"file": ("fastz.tif", path.read_bytes())},
                      data={"source": '{"plane": 1}'})  # fmt: skip
    assert upload.status_code == 202, upload.text
    assert upload.json()["movie"]["plane"] == 1 and upload.json()["source"] == {
        "kind": "multipart", "plane": 1}
    refused = api.post("/v1/jobs", files={"file": ("fastz.tif", path.read_bytes())},
                       data={"source": '{"plane": 7}'})  # fmt: skip
    assert "there is no plane 7" in problem(refused, 422)["detail"]
    invalid = api.post("/v1/jobs", files={"file": ("fastz.tif", path.read_bytes())},
                       data={"source": '{"plane": -1}'})  # fmt: skip
    assert problem(invalid, 422)["errors"][0]["loc"][0] == "source"


def test_idempotency_key_returns_the_same_job(api: TestClient, key_prefix: str,
                                              redis_client) -> None:  # fmt: skip
    request = {"source": {"path": "rig3/session.h5"}}
    headers = {"Idempotency-Key": "rig3-session-h5-try"}
    first = api.post("/v1/jobs", json=request, headers=headers)
    again = api.post("/v1/jobs", json=request, headers=headers)
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert redis_client.zcard(f"{key_prefix}:jobs") == 1
    other = api.post("/v1/jobs", json={**request, "params": {"fps": 3}}, headers=headers)
    assert problem(other, 422)["type"].endswith("idempotency-key-reused")
    failed = api.post("/v1/jobs", json={"source": {"path": "nope.tif"}},
                      headers={"Idempotency-Key": "k2"})  # fmt: skip
    assert failed.status_code == 422
    fixed = api.post("/v1/jobs", json=request, headers={"Idempotency-Key": "k2"})
    assert fixed.status_code == 202  # a refused request does not burn its key


def test_webhooks_need_a_secret(tmp_path: Path, redis_url: str, key_prefix: str, roots) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_url, allowed_roots=[roots[0]])
    with TestClient(create_app(settings, prefix=key_prefix),
                    headers=bearer(redis_url, key_prefix)) as client:
        body = problem(client.post("/v1/jobs", json={"source": {"path": "rig3/session.h5"},
                                                     "webhook_url": "http://127.0.0.1:9/x"}), 422)
        assert "CAIMX_WEBHOOK_SECRET" in body["detail"]


def _jobs(store: JobStore, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        job_id = store.new_id()
        store.create(job_id, model="m", input_name="a.tif", input_path="/x/a.tif",
                     owner="tester")
        ids.append(job_id)
        time.sleep(0.002)
    return ids[::-1]  # newest first


def test_listing_pages_and_filters(api: TestClient, redis_client, key_prefix: str) -> None:
    store = JobStore(redis_client, writer="test", prefix=key_prefix)
    ids = _jobs(store, 7)
    store.transition(ids[1], JobState.RUNNING)
    store.transition(ids[4], JobState.RUNNING)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        response = api.get("/v1/jobs", params=params)
        assert response.status_code == 200
        page = response.json()
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        cursor = page.get("next_cursor")
        if not cursor:
            assert "Link" not in response.headers
            break
        assert 'rel="next"' in response.headers["Link"]
    assert seen == ids and pages == 3
    newer = _jobs(store, 1)  # arrives while paging: later pages are not shifted
    page = api.get("/v1/jobs", params={"limit": 3, "cursor": api.get(
        "/v1/jobs", params={"limit": 3}).json()["next_cursor"]}).json()  # fmt: skip
    assert [j["id"] for j in page["jobs"]] == ids[2:5]
    running = api.get("/v1/jobs", params={"state": "running"}).json()["jobs"]
    assert [j["id"] for j in running] == [ids[1], ids[4]]
    since = store.get(ids[2]).created_at - 0.0005  # jobs are >= 2 ms apart
    iso = datetime.fromtimestamp(since, tz=UTC).isoformat()
    recent = api.get("/v1/jobs", params={"since": iso}).json()["jobs"]
    assert [j["id"] for j in recent] == newer + ids[:3]
    assert problem(api.get("/v1/jobs", params={"cursor": "garbage"}), 400)


def test_state_filter_pages_are_never_empty(api: TestClient, redis_client,
                                            key_prefix: str) -> None:
    """Running jobs separated by hundreds of queued ones: full pages, then the rest, and no
    cursor that leads to an empty page."""
    store = JobStore(redis_client, writer="test", prefix=key_prefix)
    running = []
    for n in range(1500):
        job_id = store.new_id()
        store.create(job_id, model="m", input_name="a.tif", input_path="/x/a.tif", owner="tester")
        if n % 600 == 0:
            store.transition(job_id, JobState.RUNNING)
            running.insert(0, job_id)
    seen, cursor, sizes = [], None, []
    while True:
        params = {"state": "running", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        sizes.append(len(page["jobs"]))
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == running and sizes == [2, 1]
    assert api.get("/v1/jobs", params={"state": "failed"}).json()["jobs"] == []


def test_cancel_forms_and_retry_after(api: TestClient, redis_client, key_prefix: str) -> None:
    store = JobStore(redis_client, writer="test", prefix=key_prefix)
    a, b, c = _jobs(store, 3)
    store.transition(a, JobState.RUNNING, chunks_done=0)
    running = api.get(f"/v1/jobs/{a}")
    assert 1 <= int(running.headers["Retry-After"]) <= 30
    assert api.post(f"/v1/jobs/{a}:cancel").json()["state"] == "canceled"
    assert api.delete(f"/v1/jobs/{b}").json()["state"] == "canceled"
    assert api.post(f"/v1/jobs/{c}/cancel").json()["state"] == "canceled"
    assert "Retry-After" not in api.get(f"/v1/jobs/{a}").headers
    assert problem(api.delete(f"/v1/jobs/{a}"), 409)["type"].endswith("invalid-job-state")
    assert problem(api.get(f"/v1/jobs/{a}/zarr/zarr.json"), 409)


def test_every_endpoint_is_documented_with_examples(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        "/v1/uploads": {"options", "post"},
        "/v1/uploads/{upload_id}": {"head", "get", "patch", "delete"},
        "/v1/jobs": {"get", "post"},
        "/v1/jobs/{job_id}": {"get", "delete"},
        "/v1/jobs/{job_id}:cancel": {"post"},
        "/v1/jobs/{job_id}/result": {"get"},
        "/v1/jobs/{job_id}/zarr/{key}": {"get", "head"},
        "/v1/jobs/{job_id}/result.zip": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    post = paths["/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(post) == {"application/json", "multipart/form-data"}
    assert {"path", "upload"} <= set(post["application/json"]["examples"])
    schemas = spec["components"]["schemas"]
    for name in ("JobCreate", "JobParams", "JobRead", "UploadRead", "JobSource"):
        assert schemas[name].get("examples"), name
    assert "460" in paths["/v1/uploads/{upload_id}"]["patch"]["responses"]
    assert os.environ.get("CAIMX_ALLOWED_ROOTS") is None
