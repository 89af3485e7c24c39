"""Things that break under a running service: a poisoned movie, the API process, Redis, the disk.

Each test breaks the real part (a damaged file, SIGKILL of the API, a Redis restart with AOF, a
full filesystem) and checks that the damage stays with the one job it belongs to.
"""

from __future__ import annotations

import base64
import hashlib
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import tifffile
from fastapi.testclient import TestClient
from job_polling import wait_job
from reliability_parts import start_api, start_worker

from caimx.embedded import free_port
from caimx.jobs import JobStore
from caimx.settings import Settings
from service.app import create_app

pytestmark = pytest.mark.slow
PROBLEM = "application/problem+json"
TUS = {"Tus-Resumable": "1.0.0"}


def poisoned_tiff(path: Path, movie: np.ndarray) -> Path:
    """A compressed TIFF whose header, first and last frames are fine and whose middle is noise:
    the API's header check passes, the worker's read fails."""
    tifffile.imwrite(path, movie, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[len(tif.pages) // 2]
        start, size = page.dataoffsets[0], page.databytecounts[0]
    data = bytearray(path.read_bytes())
    data[start:start + size] = np.random.default_rng(0).integers(0, 256, size, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_poisoned_movie_fails_alone_and_the_worker_lives(
    rel_settings: Settings, rel_key: str, workers: list, tmp_path: Path, make_movie,
) -> None:  # fmt: skip
    worker = start_worker(rel_settings, workers)
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, make_movie(t=120, seed=1))
    poisoned_tiff(tmp_path / "bad.tif", make_movie(t=120, seed=2))
    auth = {"Authorization": f"Bearer {rel_key}"}
    with TestClient(create_app(rel_settings), headers=auth) as api:
        ids = {}
        for name in ("bad", "good"):
            path = tmp_path / f"{name}.tif"
            response = api.post("/v1/jobs", files={"file": (path.name, path.read_bytes())})
            assert response.status_code == 202, response.text  # the header looks fine
            ids[name] = response.json()["id"]
        failed, succeeded = wait_job(api.get, ids["bad"]), wait_job(api.get, ids["good"])
    assert failed["state"] == "failed"
    assert "damaged or truncated" in failed["error"], failed["error"]
    assert succeeded["state"] == "succeeded", succeeded
    assert worker.process.poll() is None  # the worker process is still the same, alive
    client = redis.Redis.from_url(rel_settings.redis_url, decode_responses=True)
    deliveries = client.hgetall(f"{JobStore(client, writer='t').key(ids['bad'])}:deliveries")
    assert max(int(n) for n in deliveries.values()) <= rel_settings.max_attempts
    client.close()


def test_a_task_that_kills_its_worker_every_time_fails_after_max_attempts(
    rel_settings: Settings,
) -> None:
    from worker.pipeline import TooManyAttempts, count_delivery

    client = redis.Redis.from_url(rel_settings.redis_url, decode_responses=True)
    store = JobStore(client, writer="test")
    store.create("j", model="m", input_name="a", input_path="/a")
    for _ in range(rel_settings.max_attempts):
        count_delivery(store, rel_settings, "j", "chunk c1")
    with pytest.raises(TooManyAttempts, match="damaged"):
        count_delivery(store, rel_settings, "j", "chunk c1")
    client.close()


def test_api_restarted_mid_upload_resumes_from_the_offset(
    rel_settings: Settings, rel_key: str, tmp_path: Path, make_movie,
) -> None:  # fmt: skip
    movie = tmp_path / "big.tif"
    tifffile.imwrite(movie, make_movie(t=300, h=64, w=64))
    data = movie.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    meta = (f"filename {base64.b64encode(b'big.tif').decode()},"
            f"sha256 {base64.b64encode(digest.encode()).decode()}")  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {rel_key}"}
    log = tmp_path / "api.log"
    api = start_api(rel_settings, port, log)
    try:
        with httpx.Client(base_url=base, headers=auth, timeout=30) as http:
            created = http.post("/v1/uploads", headers={**TUS, "Upload-Length": str(len(data)),
                                                        "Upload-Metadata": meta})  # fmt: skip
            assert created.status_code == 201, created.text
            upload = created.json()["id"]
            half = len(data) // 2
            sent = http.patch(f"/v1/uploads/{upload}", content=data[:half], headers={
                **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
            assert sent.status_code == 204
        api.send_signal(signal.SIGKILL)  # the API dies: no shutdown of any kind
        api.wait(timeout=10)
        with pytest.raises(httpx.TransportError):
            httpx.head(f"{base}/v1/uploads/{upload}", headers={**auth, **TUS}, timeout=2)
        api = start_api(rel_settings, port, log)
        with httpx.Client(base_url=base, headers=auth, timeout=30) as http:
            head = http.head(f"/v1/uploads/{upload}", headers=TUS)
            assert head.status_code == 200 and int(head.headers["Upload-Offset"]) == half
            rest = http.patch(f"/v1/uploads/{upload}", content=data[half:], headers={
                **TUS, "Upload-Offset": str(half),
                "Content-Type": "application/offset+octet-stream"})  # fmt: skip
            assert rest.status_code == 204, rest.text
            state = http.get(f"/v1/uploads/{upload}").json()
            assert state["state"] == "complete" and state["sha256"] == digest
            job = http.post("/v1/jobs", json={"source": {"upload_id": upload}})
            assert job.status_code == 202, job.text
    finally:
        api.terminate()
        api.wait(timeout=15)


def test_redis_restart_gives_503_then_recovers_and_jobs_finish(
    rel_settings: Settings, rel_key: str, private_redis, workers: list, tmp_path: Path,
    make_movie,
) -> None:  # fmt: skip
    settings = rel_settings.model_copy(update={"tiles_per_chunk": 1})
    start_worker(settings, workers)
    movie = tmp_path / "movie.tif"
    tifffile.imwrite(movie, make_movie(t=160, seed=4))
    port = free_port()
    api = start_api(settings, port, tmp_path / "api.log")
    auth = {"Authorization": f"Bearer {rel_key}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=30) as http:
            ids = []
            for _ in range(2):
                response = http.post("/v1/jobs", files={"file": ("m.tif", movie.read_bytes())})
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            wait_job(http.get, ids[0], until=lambda j: j["progress"]["chunks_done"] >= 1)
            assert http.get(f"/v1/jobs/{ids[1]}").json()["state"] in ("queued", "running")

            private_redis.stop(signal.SIGTERM)  # a restart: the AOF is written on the way down
            down = http.get(f"/v1/jobs/{ids[0]}")
            assert down.status_code == 503 and down.headers["content-type"].startswith(PROBLEM)
            assert down.json()["type"] == "urn:caimx:problem:store-unavailable"
            assert int(down.headers["retry-after"]) > 0
            listing = http.get("/v1/jobs")
            assert listing.status_code == 503
            time.sleep(2)
            private_redis.start()
            deadline = time.monotonic() + 30
            while (status := http.get(f"/v1/jobs/{ids[0]}").status_code) != 200:
                assert status == 503 and time.monotonic() < deadline
                time.sleep(0.2)
            done = [wait_job(http.get, job_id, timeout=300) for job_id in ids]
    finally:
        api.terminate()
        api.wait(timeout=15)
    assert [j["state"] for j in done] == ["succeeded", "succeeded"], done
    assert all(j["progress"]["chunks_done"] == j["progress"]["chunks_total"] for j in done)


@pytest.fixture
def small_results_disk(rel_settings: Settings):
    """``results/`` on a 4 MiB tmpfs, almost full; skipped where mounting is not allowed."""
    results = rel_settings.results_dir
    results.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(results)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); run as root")
    try:
        filler = results / "filler"
        with filler.open("wb") as out:
            out.write(b"\0" * (4 * 1024 * 1024 - 96 * 1024))
        yield results
    finally:
        subprocess.run(["umount", "-l", str(results)], check=False)


def test_disk_full_fails_the_job_and_serves_no_half_result(
    rel_settings: Settings, rel_key: str, workers: list, small_results_disk: Path,
    tmp_path: Path, make_movie,
) -> None:  # fmt: skip
    start_worker(rel_settings, workers)
    movie = tmp_path / "movie.tif"
    tifffile.imwrite(movie, make_movie(t=120, seed=5))
    auth = {"Authorization": f"Bearer {rel_key}"}
    with TestClient(create_app(rel_settings), headers=auth) as api:
        response = api.post("/v1/jobs", files={"file": ("m.tif", movie.read_bytes())})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        job = wait_job(api.get, job_id)
        assert job["state"] == "failed"
        assert "no space left" in job["error"], job["error"]
        for path in ("result", "zarr/zarr.json", "result.zip", "export/nwb", "preview"):
            answer = api.get(f"/v1/jobs/{job_id}/{path}")
            assert answer.status_code == 409, (path, answer.text)
    assert not (small_results_disk / job_id).exists()  # the partial result went away
    (small_results_disk / "filler").unlink()  # space again: the next job succeeds
    with TestClient(create_app(rel_settings), headers=auth) as api:
        again = api.post("/v1/jobs", files={"file": ("m.tif", movie.read_bytes())}).json()["id"]
        assert wait_job(api.get, again)["state"] == "succeeded"
