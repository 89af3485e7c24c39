"""The v1 API without a worker: refusals, errors as problem+json, uploads cleaned up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient
from userkeys import bearer

from caimx.settings import Settings
from service.app import create_app

PROBLEM = "application/problem+json"


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"]
    return body


def leftovers(settings: Settings) -> list[Path]:
    return list(settings.uploads_dir.rglob("*")) if settings.uploads_dir.exists() else []


def _tiff(frames: np.ndarray) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    tifffile.imwrite(buffer, frames, photometric="minisblack")
    return buffer.getvalue()


BAD_UPLOADS = [
    ("notes.txt", b"frame 1, frame 2\n", 415, "unsupported-movie-format", "multi-page TIFF"),
    ("picture.tif", b"\x89PNG\r\n\x1a\n" + bytes(64), 415, "unsupported-movie-format", "PNG"),
    ("empty.tif", b"", 422, "not-a-movie", "empty (0 bytes)"),
    ("image.tif", _tiff(np.zeros((48, 48), np.uint16)), 422, "not-a-movie", "single 48x48 image"),
    ("short.tif", _tiff(np.zeros((5, 48, 48), np.uint16)), 422, "movie-too-small", "5 frames"),
    ("tiny.tif", _tiff(np.zeros((40, 4, 4), np.uint16)), 422, "movie-too-small", "4x4 pixels"),
    ("cut.tif", _tiff(np.ones((40, 48, 48), np.uint16))[:3000], 422, "not-a-movie", "damaged"),
]


@pytest.mark.parametrize(("name", "data", "status", "slug", "words"), BAD_UPLOADS,
                         ids=[b[0] for b in BAD_UPLOADS])  # fmt: skip
def test_bad_uploads_are_refused_and_removed(
    api: TestClient, api_settings: Settings, redis_client, key_prefix: str,
    name: str, data: bytes, status: int, slug: str, words: str,
) -> None:  # fmt: skip
    response = api.post("/v1/jobs", files={"file": (name, data)})
    body = assert_problem(response, status)
    assert body["type"] == f"urn:caimx:problem:{slug}"
    assert words in body["detail"]
    assert body["instance"] == "/v1/jobs"
    assert leftovers(api_settings) == []
    accounts = (":user", ":apikey:", ":usage:")  # the test's user and its byte count
    left = [k for k in redis_client.scan_iter(match=f"{key_prefix}:*")
            if not any(a in k for a in accounts)]  # fmt: skip
    assert left == []


def test_missing_file_field(api: TestClient, api_settings: Settings) -> None:
    body = assert_problem(api.post("/v1/jobs", files={"model": (None, "deepcaimx-mini")}), 400)
    assert "form field 'file'" in body["detail"]
    assert leftovers(api_settings) == []


def test_not_multipart(api: TestClient) -> None:
    assert_problem(api.post("/v1/jobs", content=b"II*\x00", headers={"content-type": "image/tiff"}),
                   415)  # fmt: skip


def test_unknown_model_lists_installed_ones(api: TestClient, api_settings: Settings) -> None:
    movie = _tiff(np.zeros((30, 16, 16), np.uint16))
    response = api.post("/v1/jobs", files={"file": ("m.tif", movie)}, data={"model": "nope"})
    body = assert_problem(response, 422)
    assert body["type"].endswith("unknown-model") and "deepcaimx-mini" in body["installed"]
    assert leftovers(api_settings) == []


def _multipart(name: str, payload: bytes, boundary: str = "caimxboundary") -> bytes:
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
    return head + payload + f"\r\n--{boundary}--\r\n".encode()


def test_too_large_upload_is_413_and_removed(tmp_path: Path, redis_url: str, key_prefix) -> None:
    settings = Settings(data_dir=tmp_path / "d", redis_url=redis_url, max_upload_bytes=10_000)
    body = _multipart("big.tif", b"II*\x00" + bytes(50_000))
    headers = {"content-type": "multipart/form-data; boundary=caimxboundary"}
    with TestClient(create_app(settings, prefix=key_prefix),
                    headers=bearer(redis_url, key_prefix)) as client:
        declared = client.post("/v1/jobs", content=body, headers=headers)
        assert_problem(declared, 413)

        def stream():  # no Content-Length: the limit must cut the stream itself
            for i in range(0, len(body), 4096):
                yield body[i : i + 4096]

        streamed = client.post("/v1/jobs", content=stream(), headers=headers)
        assert "content-length" not in streamed.request.headers
        assert assert_problem(streamed, 413)["max_bytes"] == 10_000
    assert leftovers(settings) == []


def test_unknown_job_is_404(api: TestClient) -> None:
    for path in ("/v1/jobs/0123456789abcdef", "/v1/jobs/0123456789abcdef/result"):
        body = assert_problem(api.get(path), 404)
        assert body["type"] == "urn:caimx:problem:unknown-job" and body["instance"] == path


def test_plain_http_errors_are_problems_too(api: TestClient) -> None:
    assert assert_problem(api.get("/v2/nothing"), 404)["type"] == "about:blank"
    assert_problem(api.delete("/healthz"), 405)
    body = assert_problem(api.get("/v1/jobs?limit=0"), 422)
    assert body["errors"][0]["loc"] == ["query", "limit"]


def test_health_and_docs(api: TestClient) -> None:
    assert api.get("/healthz").json()["status"] == "ok"
    assert api.get("/v1/jobs").json() == {"jobs": []}
    assert "swagger" in api.get("/docs").text.lower()
    spec = api.get("/openapi.json").json()
    post = spec["paths"]["/v1/jobs"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert "application/problem+json" in post["responses"]["413"]["content"]


def test_not_ready_without_workers(api: TestClient) -> None:
    body = assert_problem(api.get("/readyz"), 503)
    assert body["redis"] == "ok" and body["workers"] == []
    assert "caimx worker" in body["detail"]


def test_redis_down_is_503(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")
    key = {"Authorization": "Bearer caimx_0123456789abcdef_" + "k" * 43}
    with TestClient(create_app(settings), headers=key) as client:
        assert assert_problem(client.get("/readyz"), 503)["redis"] == "down"
        assert_problem(client.get("/v1/jobs/abc"), 503)


def test_app_needs_a_redis_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CAIMX_REDIS_URL"):
        create_app(Settings(data_dir=tmp_path, redis_url=None))


def test_service_and_client_never_import_tensorflow(tmp_path: Path) -> None:
    code = (
        "import sys; from caimx.settings import Settings; from service.app import create_app;"
        f"create_app(Settings(data_dir={str(tmp_path)!r}, redis_url='redis://127.0.0.1:1'));"
        "import service.api.v1.jobs, service.submission, service.uploads, caimx.client;"
        "assert not {'tensorflow', 'keras'} & set(sys.modules), 'TensorFlow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_submission_limits_match_the_inference_plan() -> None:
    from model.inference.params import PlanParams
    from service.submission import MIN_EDGE, MIN_FRAMES

    assert (PlanParams().min_frames, PlanParams().min_size) == (MIN_FRAMES, MIN_EDGE)
