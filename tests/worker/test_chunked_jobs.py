"""Jobs through the live service: uvicorn on 127.0.0.1, Redis, the Celery worker, the SavedModel.

A TIFF uploaded resumably and an HDF5 movie referenced on shared storage run as chunk tasks to a
result that zarr opens over HTTP; a running job is canceled; a webhook is retried and signed.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import h5py
import httpx
import numpy as np
import pytest
import tifffile
import zarr
from job_polling import finished, wait_job
from scanimage_files import fastz_movie, fastz_settings, write_scanimage

from caimx.settings import Settings
from service.app import create_app
from worker.webhooks import verify

pytestmark = pytest.mark.slow
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rigs")


@pytest.fixture(scope="module")
def client(settings: Settings, celery_worker: str, shared_root: Path,
           serve_live, auth_headers: dict) -> Iterator[httpx.Client]:  # fmt: skip
    api_settings = settings.model_copy(update={"allowed_roots": [shared_root]})
    with serve_live(create_app(api_settings)) as base, \
            httpx.Client(base_url=base, timeout=30, headers=auth_headers) as http:  # fmt: skip
        yield http


def upload(client: httpx.Client, data: bytes, name: str) -> str:
    meta = (f"filename {base64.b64encode(name.encode()).decode()},"
            f"sha256 {base64.b64encode(hashlib.sha256(data).hexdigest().encode()).decode()}")
    created = client.post("/v1/uploads", headers={**TUS, "Upload-Length": str(len(data)),
                                                  "Upload-Metadata": meta})  # fmt: skip
    upload_id = created.json()["id"]
    half = len(data) // 2
    for start, stop in ((0, half), (half, len(data))):
        response = client.patch(f"/v1/uploads/{upload_id}", content=data[start:stop], headers={
            **TUS, "Upload-Offset": str(start),
            "Content-Type": "application/offset+octet-stream"})  # fmt: skip
        assert response.status_code == 204, response.text
    return upload_id


def test_resumable_tiff_to_a_zarr_store_over_http(client: httpx.Client, settings: Settings,
                                                  make_movie) -> None:  # fmt: skip
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, make_movie(), imagej=True, metadata={"axes": "TYX", "fps": 15})
    upload_id = upload(client, buffer.getvalue(), "movie.tif")
    response = client.post("/v1/jobs", json={"source": {"upload_id": upload_id},
                                             "params": {"pixel_size_um": 1.5}})  # fmt: skip
    assert response.status_code == 202, response.text
    job = wait_job(client.get, response.json()["id"], timeout=300)
    assert job["state"] == "succeeded", job["error"]
    assert job["movie"]["fps"] == 15.0 and job["movie"]["shape"] == [120, 48, 48]
    progress = job["progress"]
    assert progress["chunks_total"] >= 2 and progress["chunks_done"] == progress["chunks_total"]
    assert progress["frames_per_s"] > 0
    assert {"prepare_s", "inference_s", "finalize_s", "total_s"} <= set(job["timings"])

    base = f"{str(client.base_url).rstrip('/')}/v1/jobs/{job['id']}/zarr"
    remote = zarr.open_group(base, mode="r",
                             storage_options={"headers": {
                                 "Authorization": client.headers["Authorization"]}})  # fmt: skip
    local = zarr.open_group(client.get(f"/v1/jobs/{job['id']}/result").json()["path"], mode="r")
    assert local["mean_image"][:].any()  # the arrays compared below are not empty
    for name in ("footprints", "traces", "mean_image"):
        np.testing.assert_array_equal(remote[name][:], local[name][:])
    # the store cannot be listed over HTTP: the arrays come from the consolidated metadata
    assert sorted(remote.array_keys()) == sorted(local.array_keys())
    assert {"footprints", "traces", "fluorescence", "calcium", "spikes"} <= set(
        remote.array_keys())
    assert sorted(remote["neurons"].array_keys()) == sorted(local["neurons"].array_keys())
    assert remote.attrs["input"]["pixel_size_um"] == 1.5
    assert remote.attrs["input"]["sha256"] == job["movie"]["sha256"]

    key = next(p for p in Path(local.store.root).rglob("*") if p.is_file() and "/c/" in str(p))
    key_path = key.relative_to(local.store.root).as_posix()
    whole = client.get(f"{base}/{key_path}")
    assert whole.status_code == 200 and whole.headers["etag"]
    part = client.get(f"{base}/{key_path}", headers={"Range": "bytes=2-5"})
    assert part.status_code == 206 and part.content == whole.content[2:6]
    assert client.head(f"{base}/zarr.json").headers["content-length"] == str(
        len(client.get(f"{base}/zarr.json").content))
    missing = client.get(f"{base}/traces/c/99/99")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith(
        "application/problem+json")
    for sneaky in ("../../uploads", "%2e%2e/%2e%2e/x", "traces/../../x", "/etc/passwd"):
        assert client.get(f"{base}/{sneaky}").status_code == 404, sneaky

    archive = client.get(f"/v1/jobs/{job['id']}/result.zip")
    assert archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        names = zipped.namelist()
        assert "result.zarr/zarr.json" in names
        assert zipped.read(f"result.zarr/{key_path}") == whole.content


def test_one_plane_of_a_scanimage_fastz_recording(client: httpx.Client, shared_root: Path,
                                                  make_movie) -> None:  # fmt: skip
    """Plane 1 of 3 (plus a fly-back frame per volume): the worker reads that plane, whose
    intensities are 500 above plane 0's and 500 below plane 2's."""
    movie = make_movie(100, 40, 40, seed=4)
    planes = [movie + np.uint16(500 * z) for z in range(3)]
    folder = shared_root / "rig2"
    folder.mkdir()
    write_scanimage(folder / "fastz_00001.tif", fastz_movie(planes),
                    fastz_settings(planes=3, flyback=1, volume_rate=10.0))  # fmt: skip
    response = client.post("/v1/jobs", json={
        "source": {"path": "rig2/fastz_00001.tif", "plane": 1},
        "params": {"motion_correction": False}})  # fmt: skip
    assert response.status_code == 202, response.text
    assert response.json()["movie"]["planes"] == 3
    job = wait_job(client.get, response.json()["id"], timeout=300)
    assert job["state"] == "succeeded", job["error"]
    assert job["movie"]["shape"] == [100, 40, 40] and job["movie"]["fps"] == 10.0
    result = zarr.open_group(client.get(f"/v1/jobs/{job['id']}/result").json()["path"], mode="r")
    layout = result.attrs["input"]["layout"]
    assert (layout["planes"], layout["plane"]) == (3, 1)
    mean = float(np.mean(result["mean_image"][:]))
    assert abs(mean - (float(movie.mean()) + 500)) < 100, mean


def test_a_zipped_tiff_series_uploaded_in_one_request(client: httpx.Client, make_movie) -> None:
    """A folder of TIFF files sent as one zip (multipart): unpacked by the API, read as one movie
    by the worker."""
    frames = make_movie(100, 40, 40, seed=5)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, (start, stop) in enumerate(((0, 40), (40, 70), (70, 100))):
            part = io.BytesIO()
            tifffile.imwrite(part, frames[start:stop], imagej=True,
                             metadata={"axes": "TYX", "fps": 12})  # fmt: skip
            archive.writestr(f"mouse7/rec_{i + 1}.tif", part.getvalue())
    response = client.post("/v1/jobs", files={"file": ("mouse7.zip", buffer.getvalue())},
                           data={"params": '{"motion_correction": false}'})  # fmt: skip
    assert response.status_code == 202, response.text
    job = wait_job(client.get, response.json()["id"], timeout=300)
    assert job["state"] == "succeeded", job["error"]
    assert job["movie"]["shape"] == [100, 40, 40] and job["movie"]["fps"] == 12.0
    assert job["movie"]["sha256"] == hashlib.sha256(buffer.getvalue()).hexdigest()
    result = zarr.open_group(client.get(f"/v1/jobs/{job['id']}/result").json()["path"], mode="r")
    assert result["traces"].shape[1] == 100
    assert result.attrs["input"]["source"]["movie_in_archive"] == "mouse7"


def test_a_movie_from_an_s3_url(client: httpx.Client, s3_put, make_movie) -> None:
    """The API checks the URL and reads the header through fsspec; the worker reads the windows
    by range requests from the S3 server, with credentials from its environment."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, make_movie(100, 40, 40, seed=6), imagej=True,
                     metadata={"axes": "TYX", "fps": 25})  # fmt: skip
    url = s3_put("rigs/rig5/mouse3.tif", buffer.getvalue())
    bucket = url.split("/")[2]
    response = client.post("/v1/jobs", json={"source": {"url": url},
                                             "params": {"motion_correction": False}})  # fmt: skip
    assert response.status_code == 202, response.text
    job = wait_job(client.get, response.json()["id"], timeout=300)
    assert job["state"] == "succeeded", job["error"]
    assert job["movie"]["shape"] == [100, 40, 40] and job["movie"]["fps"] == 25.0
    assert job["source"] == {"kind": "url", "url": url}
    result = zarr.open_group(client.get(f"/v1/jobs/{job['id']}/result").json()["path"], mode="r")
    assert result["traces"].shape[1] == 100
    refused = client.post("/v1/jobs", json={"source": {"url": f"s3://{bucket}/elsewhere/x.tif"}})
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")


class _Hook(http.server.BaseHTTPRequestHandler):
    calls: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.calls.append({"body": body, "headers": dict(self.headers)})
        self.send_response(500 if len(self.calls) == 1 else 200)  # the first call fails
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict]]]:
    _Hook.calls = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/caimx", _Hook.calls
    server.shutdown()


def test_referenced_hdf5_with_a_webhook(client: httpx.Client, settings: Settings,
                                        shared_root: Path, hook, make_movie) -> None:  # fmt: skip
    url, calls = hook
    folder = shared_root / "rig1"
    folder.mkdir()
    with h5py.File(folder / "session.h5", "w") as f:
        f.create_dataset("imaging/mov", data=make_movie(100, 40, 40, seed=3), chunks=(10, 40, 40))
        f["imaging/mov"].attrs["frame_rate"] = 30.0
    response = client.post("/v1/jobs", json={
        "source": {"path": "rig1/session.h5", "dataset": "imaging/mov"},
        "params": {"motion_correction": False}, "webhook_url": url},
        headers={"Idempotency-Key": "rig1-session"})  # fmt: skip
    assert response.status_code == 202, response.text
    job = wait_job(client.get, response.json()["id"], timeout=300)
    assert job["state"] == "succeeded", job["error"]
    digest = hashlib.sha256((folder / "session.h5").read_bytes()).hexdigest()
    assert job["movie"]["sha256"] == digest  # hashed by the worker
    deadline = time.monotonic() + 30
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(calls) == 2  # refused once, retried after the backoff
    last = calls[-1]
    headers = {k.lower(): v for k, v in last["headers"].items()}
    assert verify(settings.webhook_secret.get_secret_value(), headers["caimx-timestamp"],
                  last["body"], headers["caimx-signature"])  # fmt: skip
    sent = json.loads(last["body"])
    assert sent["event"] == "job.finished" and sent["job"]["id"] == job["id"]
    assert sent["job"]["state"] == "succeeded"


def test_cancel_a_running_job(client: httpx.Client, settings: Settings, shared_root: Path,
                              make_movie) -> None:  # fmt: skip
    np.save(shared_root / "long.npy", make_movie(1500, 96, 96, seed=5))
    response = client.post("/v1/jobs", json={"source": {"path": "long.npy"},
                                             "params": {"motion_correction": False}})  # fmt: skip
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    running = wait_job(client.get, job_id, timeout=120,
                       until=lambda j: j["progress"]["chunks_done"] >= 1 or finished(j))
    assert running["state"] == "running", running
    assert int(client.get(f"/v1/jobs/{job_id}").headers["Retry-After"]) >= 1
    canceled = client.post(f"/v1/jobs/{job_id}:cancel")
    assert canceled.status_code == 200 and canceled.json()["state"] == "canceled"
    time.sleep(3)  # the chunk in flight stops at its next batch; queued chunks are skipped
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "canceled"
    assert job["progress"]["chunks_done"] < job["progress"]["chunks_total"]
    assert not (settings.results_dir / job_id).exists()
    assert client.get(f"/v1/jobs/{job_id}/zarr/zarr.json").status_code == 409
