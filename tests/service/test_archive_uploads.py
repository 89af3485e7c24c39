"""Zip archives uploaded by multipart and tus: a TIFF series or a Zarr store inside is the movie;
archives that could write outside their folder, hide symlinks or unpack to too much are refused
(problem+json 4xx) before any file is written, and nothing they name appears anywhere."""

from __future__ import annotations

import base64
import hashlib
import io
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import tifffile
import zarr
from fastapi.testclient import TestClient
from userkeys import bearer

from caimx.jobs import JobStore
from caimx.settings import Settings
from caimx.upload_store import UploadStore
from model.io import open_movie
from service.app import create_app
from service.limits import stored_bytes

TUS = {"Tus-Resumable": "1.0.0"}
PROBLEM = "application/problem+json"
LIMIT = 2_000_000


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", redis_url=redis_url, max_upload_bytes=LIMIT)


@pytest.fixture
def api(settings: Settings, key_prefix: str, redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings, prefix=key_prefix),
                    headers=bearer(redis_url, key_prefix)) as client:
        yield client


def movie(t: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(20, (t, 24, 28)).astype(np.uint16)


def tiff_bytes(frames: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, frames, imagej=True, metadata={"axes": "TYX", "fps": 20})
    return buffer.getvalue()


def zipped(entries: dict[str, bytes], *, links: dict[str, str] | None = None,
           compression: int = zipfile.ZIP_DEFLATED) -> bytes:  # fmt: skip
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def tiff_series_zip(frames: np.ndarray, folder: str = "session/") -> bytes:
    """Three TIFF files in a folder, in natural order (rec_2 before rec_10), with the clutter a
    Mac adds to an archive."""
    parts = {f"{folder}rec_1.tif": tiff_bytes(frames[:15]),
             f"{folder}rec_2.tif": tiff_bytes(frames[15:30]),
             f"{folder}rec_10.tif": tiff_bytes(frames[30:])}  # fmt: skip
    parts[f"__MACOSX/{folder}._rec_1.tif"] = b"\x00\x05\x16\x07 resource fork"
    parts[f"{folder}.DS_Store"] = b"Bud1"
    return zipped(parts)


def zarr_zip(frames: np.ndarray, tmp_path: Path) -> bytes:
    store = tmp_path / "movie.zarr"
    array = zarr.create_array(store, shape=frames.shape, dtype=frames.dtype, chunks=(10, 24, 28))
    array[:] = frames
    return zipped({f"movie.zarr/{p.relative_to(store).as_posix()}": p.read_bytes()
                   for p in sorted(store.rglob("*")) if p.is_file()})  # fmt: skip


def tus_upload(api: TestClient, data: bytes, name: str) -> str:
    meta = (f"filename {base64.b64encode(name.encode()).decode()},"
            f"sha256 {base64.b64encode(hashlib.sha256(data).hexdigest().encode()).decode()}")
    created = api.post("/v1/uploads", headers={**TUS, "Upload-Length": str(len(data)),
                                               "Upload-Metadata": meta})  # fmt: skip
    assert created.status_code == 201, created.text
    upload_id = created.json()["id"]
    sent = api.patch(f"/v1/uploads/{upload_id}", content=data, headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert sent.status_code == 204, sent.text
    return upload_id


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_zipped_tiff_series_by_multipart(api: TestClient, settings: Settings) -> None:
    frames = movie()
    response = api.post("/v1/jobs", files={"file": ("session.zip", tiff_series_zip(frames))})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["movie"]["name"] == "session.zip" and job["movie"]["shape"] == [40, 24, 28]
    assert job["movie"]["fps"] == 20.0
    assert job["source"] == {"kind": "multipart", "archive": "zip", "movie_in_archive": "session"}
    unpacked = settings.uploads_dir / job["id"] / "session.zip.unpacked" / "session"
    assert sorted(p.name for p in unpacked.iterdir()) == ["rec_1.tif", "rec_10.tif", "rec_2.tif"]
    with open_movie(unpacked) as reader:  # what the worker will read
        np.testing.assert_array_equal(reader.read(0, 40), frames)


def test_a_zipped_zarr_store_by_tus_used_twice(api: TestClient, settings: Settings,
                                               tmp_path: Path, redis_url: str,
                                               key_prefix: str) -> None:  # fmt: skip
    frames = movie(seed=1)
    upload_id = tus_upload(api, zarr_zip(frames, tmp_path), "movie.zarr.zip")
    first = api.post("/v1/jobs", json={"source": {"upload_id": upload_id}})
    assert first.status_code == 202, first.text
    assert first.json()["movie"]["shape"] == [40, 24, 28]
    assert first.json()["source"]["movie_in_archive"] == "movie.zarr"
    unpacked = settings.resumable_dir / f"{upload_id}.bin.unpacked"
    made = unpacked.stat().st_mtime_ns
    second = api.post("/v1/jobs", json={"source": {"upload_id": upload_id}})
    assert second.status_code == 202, second.text
    assert unpacked.stat().st_mtime_ns == made  # unpacked once
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:  # the unpacked folder counts against the storage quota with the archive
        store = JobStore(client, writer="test", prefix=key_prefix)
        uploads = UploadStore(client, prefix=key_prefix)
        unpacked_bytes = sum(f.stat().st_size for f in unpacked.rglob("*") if f.is_file())
        assert unpacked_bytes > 0
        kept = stored_bytes(store, uploads, settings, "tester")
        results = sum(f.stat().st_size for f in settings.results_dir.rglob("*") if f.is_file())
        assert kept - results == Path(settings.resumable_dir / f"{upload_id}.bin").stat().st_size \
            + unpacked_bytes
    finally:
        client.close()
    assert api.delete(f"/v1/uploads/{upload_id}", headers=TUS).status_code in (204, 409)


BOMB = zipped({"session/rec_1.tif": bytes(3 * LIMIT)})  # 6 MB of zeros in a few KiB
MALICIOUS = [
    ("dot-dot", zipped({"session/../../../../evil.txt": b"pwned"}), 422, "unsafe-archive", "'..'"),
    ("absolute", zipped({"/tmp/evil.txt": b"pwned"}), 422, "unsafe-archive", "absolute path"),
    ("drive", zipped({"C:/evil.txt": b"pwned"}), 422, "unsafe-archive", "absolute path"),
    ("symlink", zipped({"session/rec_1.tif": b"II*\x00"}, links={"session/rec_2.tif": "/etc"}),
     422, "unsafe-archive", "symbolic link"),
    ("twice", zipped({"a.tif": b"1", "b.tif": b"2"}).replace(b"b.tif", b"a.tif"), 422,
     "unsafe-archive", "twice"),
    ("bomb", BOMB, 413, "upload-too-large", "unpacks to more than"),
    ("damaged", zipped({"session/rec_1.tif": tiff_bytes(movie())},
                       compression=zipfile.ZIP_STORED).replace(b"\x00\x00\x00\x00", b"\x01" * 4, 3),
     422, "unsafe-archive", "damaged"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "status", "slug", "words"), [m[1:] for m in MALICIOUS],
                         ids=[m[0] for m in MALICIOUS])  # fmt: skip
@pytest.mark.parametrize("way", ["multipart", "tus"])
def test_malicious_archives_are_refused(api: TestClient, settings: Settings, tmp_path: Path,
                                        way: str, data: bytes, status: int, slug: str,
                                        words: str) -> None:  # fmt: skip
    assert len(data) < LIMIT
    if way == "multipart":
        response = api.post("/v1/jobs", files={"file": ("session.zip", data)})
    else:
        upload_id = tus_upload(api, data, "session.zip")
        response = api.post("/v1/jobs", json={"source": {"upload_id": upload_id}})
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == f"urn:caimx:problem:{slug}" and words in body["detail"]
    assert not list(tmp_path.rglob("evil.txt")) and not Path("/tmp/evil.txt").exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_symlink()]
    assert not [p for p in tmp_path.rglob("*.unpacked")]  # nothing left half unpacked
    if way == "multipart":
        assert files_under(settings.uploads_dir) == []
    else:
        assert [p.name for p in files_under(settings.resumable_dir)] == [f"{upload_id}.bin"]


def test_an_archive_without_a_movie(api: TestClient) -> None:
    response = api.post("/v1/jobs", files={"file": ("notes.zip", zipped({"a.txt": b"x",
                                                                         "b.txt": b"y"}))})
    assert response.status_code == 415, response.text
    assert "neither a Zarr store nor a folder of TIFF files" in response.json()["detail"]
