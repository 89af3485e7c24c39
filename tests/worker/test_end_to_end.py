"""A real job through the real parts: API -> Redis -> Celery worker -> SavedModel -> Zarr."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from fastapi.testclient import TestClient
from job_polling import wait_job

from caimx.jobs import JobState, JobStore
from caimx.queue import QUEUE, TASK_PROCESS_JOB, make_celery
from caimx.settings import Settings
from service.app import create_app

pytestmark = pytest.mark.slow


@pytest.fixture
def api(settings: Settings, celery_worker: str, auth_headers: dict) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=auth_headers) as client:
        yield client


def test_ready_with_a_worker(api: TestClient, celery_worker: str) -> None:
    response = api.get("/readyz")
    assert response.status_code == 200, response.text
    assert celery_worker in [w["hostname"] for w in response.json()["workers"]]


def test_a_bad_movie_fails_only_its_job(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    # Bypass the API's checks, as if the file were damaged after it was accepted.
    broken = settings.uploads_dir / "broken" / "broken.npy"
    broken.parent.mkdir(parents=True)
    np.save(broken, np.zeros((200, 48, 48), np.uint16))
    broken.write_bytes(broken.read_bytes()[:2000])
    store = JobStore.from_url(settings.redis_url, writer="test")
    job_id = store.new_id()
    store.create(job_id, model="deepcaimx-mini", input_name="broken.npy", input_path=str(broken),
                 owner="tester")
    celery = make_celery(settings)
    celery.send_task(TASK_PROCESS_JOB, args=[job_id], queue=QUEUE)
    celery.close()
    job = wait_job(api.get, job_id, timeout=60)
    assert job["state"] == "failed"
    assert "truncated" in job["error"]
    assert job["updated_by"].startswith("worker:")
    result = api.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 409
    assert result.headers["content-type"] == "application/problem+json"
    assert "truncated" in result.json()["detail"]
    assert api.get("/readyz").status_code == 200  # the worker is still there


def test_upload_to_zarr_result(api: TestClient, settings: Settings, movie_tiff: Path) -> None:
    started = time.monotonic()
    with movie_tiff.open("rb") as handle:
        response = api.post("/v1/jobs", files={"file": ("movie.tif", handle, "image/tiff")})
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] == "queued" and job["model"] == settings.default_model == "caimx-mini"
    assert job["movie"]["shape"] == [120, 48, 48] and job["movie"]["dtype"] == "uint16"

    done = wait_job(api.get, job["id"], timeout=300)
    seconds = time.monotonic() - started
    print(f"\none 120x48x48 job, upload to succeeded: {seconds:.1f} s; timings {done['timings']}")
    assert done["state"] == "succeeded", done["error"]
    assert done["progress"]["chunks_total"] > 0
    assert done["progress"]["chunks_done"] == done["progress"]["chunks_total"]
    assert done["progress"]["fraction"] == 1.0
    assert done["attempts"] == 1 and done["started_at"] and done["finished_at"]
    assert {"load_model_s", "inference_s", "total_s"} <= set(done["timings"])

    result = api.get(f"/v1/jobs/{job['id']}/result").json()
    path = Path(result["path"])
    assert path == settings.results_dir / job["id"] / "result.zarr"
    assert result["summary"]["movie_shape"] == [120, 48, 48]
    group = zarr.open_group(path, mode="r")
    k = group["footprints"].shape[0]
    assert group["footprints"].shape == (k, 48, 48) and group["footprints"].dtype == np.float32
    assert group["traces"].shape == (k, 120) and group["traces"].dtype == np.float32
    assert group["fluorescence"].shape == group["neuropil"].shape == (k, 120)
    assert k == 0 or np.ptp(group["fluorescence"][...]) > 0  # read from the movie by finalize
    assert group["mean_image"].shape == (48, 48)
    attrs = group.attrs.asdict()
    assert attrs["fluorescence"]["motion_corrected"] in (True, False)
    assert attrs["model"]["name"] == "caimx-mini" and attrs["model"]["version"]
    assert attrs["input"]["name"] == "movie.tif"
    assert attrs["input"]["sha256"] == job["movie"]["sha256"]
    assert attrs["input"]["shape"] == [120, 48, 48]
    assert attrs["software"]["caimx"]
    assert attrs["parameters"]["plan"]["tile_overlap"] == settings.tile_overlap

    namespace: dict = {}
    exec(result["python"].replace("print(", "len("), namespace)  # the snippet works as given
    assert namespace["traces"].shape == (k, 120)
    listed = [j["id"] for j in api.get("/v1/jobs").json()["jobs"]]
    assert job["id"] in listed
    assert JobState(done["state"]) is JobState.SUCCEEDED


def test_cancel_a_job(api: TestClient, settings: Settings, movie_tiff: Path) -> None:
    with movie_tiff.open("rb") as handle:
        job = api.post("/v1/jobs", files={"file": ("movie.tif", handle)}).json()
    canceled = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["state"] == "canceled"
    assert wait_job(api.get, job["id"], timeout=60)["state"] == "canceled"
    again = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["type"] == "urn:caimx:problem:invalid-job-state"
    time.sleep(1)  # the worker skips the canceled job and leaves no result behind
    assert not (settings.results_dir / job["id"] / "result.zarr").exists()
