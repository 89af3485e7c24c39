"""Jobs on movies behind fsspec URLs (a local S3-compatible server): accepted under the allowed
prefixes, refused elsewhere with problem+json (403) or when malformed (422)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient
from userkeys import bearer

from caimx.settings import Settings
from service.app import create_app

BUCKET = "caimx-test-rigs"
PROBLEM = "application/problem+json"


@pytest.fixture
def api(tmp_path: Path, redis_url: str, key_prefix: str, s3_server: str) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_url,
                        remote_allowed_prefixes=[f"s3://{BUCKET}/rigs/"],
                        remote_options={"s3": {"endpoint_url": s3_server}})  # fmt: skip
    with TestClient(create_app(settings, prefix=key_prefix),
                    headers=bearer(redis_url, key_prefix)) as client:
        yield client


def tiff(t: int = 40) -> bytes:
    buffer = io.BytesIO()
    movie = np.random.default_rng(t).poisson(20, (t, 24, 32)).astype(np.uint16)
    tifffile.imwrite(buffer, movie, imagej=True, metadata={"axes": "TYX", "fps": 30})
    return buffer.getvalue()


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return response.json()


def test_a_url_under_an_allowed_prefix(api: TestClient, s3_put) -> None:
    data = tiff()
    url = s3_put("rigs/rig3/mouse12.tif", data)
    response = api.post("/v1/jobs", json={"source": {"url": url}, "params": {"fps": 10}})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["source"] == {"kind": "url", "url": url}
    assert job["movie"]["name"] == "mouse12.tif" and job["movie"]["bytes"] == len(data)
    assert job["movie"]["shape"] == [40, 24, 32] and job["movie"]["fps"] == 30.0


@pytest.mark.parametrize(("url", "status", "words"), [
    (f"s3://{BUCKET}/other/mouse.tif", 403, "outside the URLs"),
    (f"s3://{BUCKET}/rigs-old/mouse.tif", 403, "outside the URLs"),
    ("s3://someone-elses-bucket/rigs/mouse.tif", 403, "outside the URLs"),
    (f"s3://{BUCKET}/rigs/../other/mouse.tif", 403, "'..'"),
    ("file:///etc/passwd", 403, "not read from requests"),
    ("https://example.org/rigs/mouse.tif", 403, "outside the URLs"),
    (f"s3://key:secret@{BUCKET}/rigs/mouse.tif", 422, "user name or password"),
    (f"s3://{BUCKET}/rigs/mouse.tif?versionId=1", 422, "query string"),
    (f"s3://{BUCKET}/rigs/%2e%2e/other/mouse.tif", 422, "%-escape"),
    (f"s3://{BUCKET}/rigs/missing.tif", 422, "there is no"),
    ("/srv/rigs/mouse.tif", 422, "a URL looks like"),
])  # fmt: skip
def test_urls_that_are_refused(api: TestClient, s3_put, url: str, status: int,
                                words: str) -> None:  # fmt: skip
    s3_put("other/mouse.tif", tiff())
    body = problem(api.post("/v1/jobs", json={"source": {"url": url}}), status)
    assert body["type"].endswith("source-forbidden" if status == 403 else "invalid-source")
    assert words in body["detail"]
    assert "secret" not in body["detail"]  # the URL's credentials are not repeated


def test_no_prefixes_no_urls(tmp_path: Path, redis_url: str, key_prefix: str) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_url)
    with TestClient(create_app(settings, prefix=key_prefix),
                    headers=bearer(redis_url, key_prefix)) as client:
        body = problem(client.post("/v1/jobs", json={"source": {"url": f"s3://{BUCKET}/rigs/a"}}),
                       403)  # fmt: skip
        assert "CAIMX_REMOTE_ALLOWED_PREFIXES" in body["detail"]


def test_one_source_only(api: TestClient) -> None:
    body = problem(api.post("/v1/jobs", json={"source": {"url": f"s3://{BUCKET}/rigs/a.tif",
                                                         "path": "a.tif"}}), 422)  # fmt: skip
    assert "exactly one of 'upload_id', 'path' and 'url'" in str(body["errors"])
