"""tus 1.0 resumable uploads: creation, offsets, interruption and resume, checksums, termination."""

from __future__ import annotations

import base64
import hashlib
import socket
import time
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import tifffile
from fastapi.testclient import TestClient
from userkeys import bearer

from caimx.settings import Settings
from service.app import create_app

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}
PROBLEM = "application/problem+json"


def movie_bytes(t: int = 60) -> bytes:
    buffer = BytesIO()
    tifffile.imwrite(buffer, np.random.default_rng(t).poisson(20, (t, 48, 48)).astype(np.uint16))
    return buffer.getvalue()


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def create(client, data: bytes, *, sha256: str | None = None, name: str = "rec.tif") -> str:
    digest = sha256 if sha256 is not None else hashlib.sha256(data).hexdigest()
    meta = metadata(filename=name, sha256=digest)
    response = client.post("/v1/uploads", headers={
        **TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta})  # fmt: skip
    assert response.status_code == 201, response.text
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Location"].endswith(f"/v1/uploads/{response.json()['id']}")
    return response.json()["id"]


def offset(client, upload_id: str) -> int:
    response = client.head(f"/v1/uploads/{upload_id}", headers=TUS)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    return int(response.headers["Upload-Offset"])


def test_capabilities(api: TestClient) -> None:
    response = api.options("/v1/uploads")
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    extensions = set(response.headers["Tus-Extension"].split(","))
    assert {"creation", "termination", "checksum"} <= extensions
    assert "sha256" in response.headers["Tus-Checksum-Algorithm"]


def test_upload_in_parts_then_a_job(api: TestClient, api_settings: Settings) -> None:
    data = movie_bytes()
    upload_id = create(api, data)
    assert offset(api, upload_id) == 0
    third = len(data) // 3
    first = api.patch(f"/v1/uploads/{upload_id}", content=data[:third],
                      headers={**OCTETS, "Upload-Offset": "0"})  # fmt: skip
    assert first.status_code == 204 and first.headers["Upload-Offset"] == str(third)
    assert "Upload-Expires" in first.headers
    stale = api.patch(f"/v1/uploads/{upload_id}", content=data[third:],
                      headers={**OCTETS, "Upload-Offset": "0"})  # fmt: skip
    assert stale.status_code == 409 and stale.json()["offset"] == third
    rest = api.patch(f"/v1/uploads/{upload_id}", content=data[third:],
                     headers={**OCTETS, "Upload-Offset": str(third)})  # fmt: skip
    assert rest.status_code == 204 and rest.headers["Upload-Offset"] == str(len(data))
    state = api.get(f"/v1/uploads/{upload_id}").json()
    assert state["state"] == "complete" and state["sha256"] == hashlib.sha256(data).hexdigest()
    assert Path(api_settings.resumable_dir / f"{upload_id}.bin").read_bytes() == data

    job = api.post("/v1/jobs", json={"source": {"upload_id": upload_id},
                                     "params": {"fps": 12.5, "motion_correction": False}})
    assert job.status_code == 202, job.text
    body = job.json()
    assert body["movie"]["shape"] == [60, 48, 48] and body["movie"]["fps"] == 12.5
    assert body["source"] == {"kind": "upload", "upload_id": upload_id}
    assert body["params"]["motion_correction"] is False
    # An upload a job uses cannot be removed while the job is queued.
    assert api.delete(f"/v1/uploads/{upload_id}", headers=TUS).status_code == 409


def test_whole_file_checksum_mismatch_removes_the_upload(
    api: TestClient, api_settings: Settings
) -> None:
    data = movie_bytes()
    upload_id = create(api, data, sha256="0" * 64)
    response = api.patch(f"/v1/uploads/{upload_id}", content=data,
                         headers={**OCTETS, "Upload-Offset": "0"})  # fmt: skip
    assert response.status_code == 460, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"].endswith("checksum-mismatch")
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert api.head(f"/v1/uploads/{upload_id}", headers=TUS).status_code == 404
    assert not (api_settings.resumable_dir / f"{upload_id}.bin").exists()
    job = api.post("/v1/jobs", json={"source": {"upload_id": upload_id}})
    assert job.status_code == 404 and job.json()["type"].endswith("unknown-upload")


def test_request_checksum_mismatch_discards_only_that_request(api: TestClient) -> None:
    data = movie_bytes()
    upload_id = create(api, data)
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    bad = api.patch(f"/v1/uploads/{upload_id}", content=data[:1000], headers={
        **OCTETS, "Upload-Offset": "0", "Upload-Checksum": f"sha256 {wrong}"})  # fmt: skip
    assert bad.status_code == 460
    assert offset(api, upload_id) == 0
    right = base64.b64encode(hashlib.sha1(data[:1000]).digest()).decode()
    good = api.patch(f"/v1/uploads/{upload_id}", content=data[:1000], headers={
        **OCTETS, "Upload-Offset": "0", "Upload-Checksum": f"sha1 {right}"})  # fmt: skip
    assert good.status_code == 204 and offset(api, upload_id) == 1000


def test_too_large_is_413_before_any_byte(tmp_path: Path, redis_url: str, key_prefix: str) -> None:
    settings = Settings(data_dir=tmp_path / "d", redis_url=redis_url, max_upload_bytes=1000)
    with TestClient(create_app(settings, prefix=key_prefix),
                    headers=bearer(redis_url, key_prefix)) as client:
        response = client.post("/v1/uploads", headers={**TUS, "Upload-Length": "1001"})
        assert response.status_code == 413
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.headers["Tus-Max-Size"] == "1000"
    assert not settings.resumable_dir.exists() or not any(settings.resumable_dir.iterdir())


def test_protocol_errors(api: TestClient) -> None:
    assert api.post("/v1/uploads", headers={"Upload-Length": "10"}).status_code == 412
    assert api.post("/v1/uploads", headers=TUS).status_code == 400
    assert api.post("/v1/uploads", headers={**TUS, "Upload-Length": "10",
                                            "Upload-Metadata": metadata(sha256="xyz")}
                    ).status_code == 400  # fmt: skip
    upload_id = create(api, b"0123456789")
    wrong_type = api.patch(f"/v1/uploads/{upload_id}", content=b"01",
                           headers={**TUS, "Upload-Offset": "0",
                                    "Content-Type": "application/json"})  # fmt: skip
    assert wrong_type.status_code == 415
    too_long = api.patch(f"/v1/uploads/{upload_id}", content=b"0123456789abc",
                         headers={**OCTETS, "Upload-Offset": "0"})  # fmt: skip
    assert too_long.status_code == 413
    assert api.head("/v1/uploads/" + "f" * 32, headers=TUS).status_code == 404
    incomplete = create(api, b"0123456789" * 3)
    job = api.post("/v1/jobs", json={"source": {"upload_id": incomplete}})
    assert job.status_code == 409 and job.json()["type"].endswith("upload-incomplete")
    assert api.delete(f"/v1/uploads/{incomplete}", headers=TUS).status_code == 204
    assert api.get(f"/v1/uploads/{incomplete}").status_code == 404


def _send_half_and_hang_up(base: str, upload_id: str, data: bytes, auth: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    head = (f"PATCH /v1/uploads/{upload_id} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {auth}\r\n"
            "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()  # fmt: skip
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + data[: len(data) // 2])
        time.sleep(0.5)  # the network drops here


def test_interrupted_upload_resumes_from_its_offset(
    api_settings: Settings, key_prefix: str, serve_live
) -> None:
    data = movie_bytes(400)  # about 1.8 MB
    half = len(data) // 2
    auth = bearer(api_settings.redis_url, key_prefix)
    with serve_live(create_app(api_settings, prefix=key_prefix)) as base, \
            httpx.Client(base_url=base, headers=auth) as client:  # fmt: skip
        upload_id = create(client, data, name="mouse12.tif")
        _send_half_and_hang_up(base, upload_id, data, auth["Authorization"])
        deadline = time.monotonic() + 10
        while (received := offset(client, upload_id)) < half and time.monotonic() < deadline:
            time.sleep(0.1)
        assert received == half  # every byte that arrived was kept
        resumed = client.patch(f"/v1/uploads/{upload_id}", content=data[received:],
                               headers={**OCTETS, "Upload-Offset": str(received)})  # fmt: skip
        assert resumed.status_code == 204, resumed.text
        state = client.get(f"/v1/uploads/{upload_id}").json()
        assert state["state"] == "complete"
        assert state["sha256"] == hashlib.sha256(data).hexdigest()
        assert state["filename"] == "mouse12.tif"


def test_upload_of_a_non_movie_is_refused_when_named(api: TestClient) -> None:
    upload_id = create(api, b"not a movie at all")
    api.patch(f"/v1/uploads/{upload_id}", content=b"not a movie at all",
              headers={**OCTETS, "Upload-Offset": "0"})  # fmt: skip
    job = api.post("/v1/jobs", json={"source": {"upload_id": upload_id}})
    assert job.status_code == 415 and job.json()["type"].endswith("unsupported-movie-format")
