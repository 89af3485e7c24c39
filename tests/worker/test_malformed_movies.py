"""Malformed movies made by the test: each is refused (4xx) or fails its job with a reason.

Random bytes, truncated files, absurd declared dimensions, wrong pixel types, NaN and infinite
pixels go through the real API to the session's real worker; afterwards the API and the worker
still answer and a good movie still succeeds.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient
from job_polling import wait_job

from caimx.queue import live_workers
from caimx.settings import Settings
from service.app import create_app

pytestmark = pytest.mark.slow
RNG = np.random.default_rng(7)


def _movie(t: int = 120) -> np.ndarray:
    return RNG.poisson(20, (t, 48, 48)).astype(np.uint16)


def _tiff(movie: np.ndarray, **kwargs) -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, movie, **kwargs)
    return out.getvalue()


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=array.dtype == object)
    return out.getvalue()


def _huge_tiff() -> bytes:
    data = bytearray(_tiff(_movie(20)))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tags = {tag.name: tag.valueoffset for tag in tif.pages[0].tags.values()}
    for name in ("ImageWidth", "ImageLength"):
        data[tags[name]:tags[name] + 4] = struct.pack("<I", 2**31 - 1)
    return bytes(data)


def _huge_npy() -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<u2", "fortran_order": False,
                                                  "shape": (10**6, 10**5, 10**5)})  # fmt: skip
    return header.getvalue() + RNG.bytes(4096)


def _nan_inside() -> bytes:
    movie = _movie().astype(np.float32)
    movie[50:60, 10:20, 10:20] = np.nan  # first and last frames fine: only the worker sees it
    return _npy(movie)


MALFORMED: dict[str, Callable[[], bytes]] = {
    "random.tif": lambda: RNG.bytes(64_000),
    "random.npy": lambda: RNG.bytes(64_000),
    "empty.tif": lambda: b"",
    "truncated.tif": lambda: _tiff(_movie())[: len(_tiff(_movie())) // 2],
    "truncated.npy": lambda: _npy(_movie())[:30_000],
    "huge-dims.tif": _huge_tiff,
    "huge-dims.npy": _huge_npy,
    "complex.npy": lambda: _npy(_movie().astype(np.complex64)),
    "bool.npy": lambda: _npy(_movie() > 20),
    "object.npy": lambda: _npy(np.full((20, 48, 48), "x", dtype=object)),
    "all-nan.npy": lambda: _npy(np.full((120, 48, 48), np.nan, np.float32)),
    "inf.npy": lambda: _npy(np.full((120, 48, 48), np.inf, np.float32)),
    "nan-inside.npy": _nan_inside,
    "one-frame.tif": lambda: _tiff(_movie(1)),
    "rgb.tif": lambda: _tiff(RNG.integers(0, 255, (30, 48, 48, 3), dtype=np.uint8),
                             photometric="rgb"),
}


@pytest.fixture(scope="module")
def api(settings: Settings, celery_worker: str, auth_headers: dict) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=auth_headers) as client:
        yield client


def test_every_malformed_movie_is_refused_or_fails_with_a_reason(
    api: TestClient, settings: Settings, celery_worker: str, redis_client, make_movie,
) -> None:  # fmt: skip
    outcomes: dict[str, str] = {}
    accepted: dict[str, str] = {}
    for name, make in MALFORMED.items():
        response = api.post("/v1/jobs", files={"file": (name, make())})
        if response.status_code == 202:
            accepted[name] = response.json()["id"]
            continue
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["detail"], name
        outcomes[name] = f"{response.status_code}: {response.json()['detail']}"
    for name, job_id in accepted.items():
        job = wait_job(api.get, job_id)
        assert job["state"] == "failed", (name, job)
        assert job["error"] and "internal error" not in job["error"], (name, job["error"])
        outcomes[name] = f"job failed: {job['error']}"
    assert set(outcomes) == set(MALFORMED)
    for name, outcome in outcomes.items():
        print(f"{name:16} {outcome[:110]}")

    # nothing crashed: the API answers, the same worker still beats and a good movie succeeds
    assert api.get("/healthz").status_code == 200
    assert celery_worker in [w["hostname"] for w in live_workers(redis_client)]
    good = api.post("/v1/jobs", files={"file": ("good.tif", _tiff(make_movie()))})
    assert good.status_code == 202, good.text
    assert wait_job(api.get, good.json()["id"])["state"] == "succeeded"
