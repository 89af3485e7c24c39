"""A finished job's result over HTTP: a read-only Zarr v3 store, and the store as one zip file.

``GET /v1/jobs/{id}/zarr/{key}`` answers the keys of the result group (``zarr.json``, chunk keys)
with ETag, Last-Modified and HTTP Range support, 404 for keys that do not exist (Zarr reads a
missing chunk as fill value), so ``zarr.open_group("http://host/v1/jobs/ID/zarr", mode="r")``
works with fsspec's HTTP filesystem. Keys that leave the store are refused.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, StreamingResponse

from service.api.v1.jobs import finished_result
from service.auth import CurrentUser
from service.deps import StoreDep
from service.errors import ResultKeyNotFoundError, problem_responses

router = APIRouter(prefix="/jobs", tags=["results"])
BLOCK = 1024 * 1024


def store_file(root: Path, key: str) -> Path:
    """The file of ``key`` inside the store ``root``; 404 for anything else."""
    parts = key.split("/")
    if (not key or key.startswith("/") or "\\" in key or "\x00" in key
            or any(p in ("", ".", "..") for p in parts)):  # fmt: skip
        raise ResultKeyNotFoundError(f"{key!r} is not a key of this store")
    target = (root / key).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise ResultKeyNotFoundError(f"the store has no key {key!r}")
    return target


_ZARR_RESPONSES = {
    200: {"description": "The key's bytes (`zarr.json` documents are JSON).",
          "content": {"application/octet-stream": {}, "application/json": {"example": {
              "zarr_format": 3, "node_type": "group", "attributes": {}}}}},
    206: {"description": "The requested byte range (`Range: bytes=0-99`)."},
    **problem_responses(404, 409, 410),
}  # fmt: skip


@router.head("/{job_id}/zarr/{key:path}", name="zarr_key_head", operation_id="head_zarr_key",
             summary="Size, ETag and type of one key of the result store",
             response_class=FileResponse, responses=_ZARR_RESPONSES)  # fmt: skip
@router.get("/{job_id}/zarr/{key:path}", name="zarr_key", operation_id="get_zarr_key",
            summary="One key of the result, read-only Zarr v3 store over HTTP (Range, ETag)",
            response_class=FileResponse, responses=_ZARR_RESPONSES)  # fmt: skip
def zarr_key(job_id: str, key: str, store: StoreDep, user: CurrentUser) -> FileResponse:
    """Example: `GET /v1/jobs/ID/zarr/traces/zarr.json`, `GET /v1/jobs/ID/zarr/traces/c/0/0`."""
    job = finished_result(store, job_id, user)
    root = Path(job.result_path).resolve()
    path = store_file(root, key)
    media = "application/json" if path.name == "zarr.json" else "application/octet-stream"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=60"})


class _Sink(io.RawIOBase):
    """A write-only, unseekable file that hands out what was written (zipfile streams into it)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._parts.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def drain(self) -> Iterator[bytes]:
        parts, self._parts = self._parts, []
        yield from parts


def zip_stream(root: Path, *, folder: str) -> Iterator[bytes]:
    """The store as a zip (stored, not compressed: Zarr chunks are compressed already)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = f"{folder}/{path.relative_to(root).as_posix()}"
            with path.open("rb") as src, archive.open(name, "w", force_zip64=True) as dest:
                while block := src.read(BLOCK):
                    dest.write(block)
                    yield from sink.drain()
            yield from sink.drain()
    yield from sink.drain()


@router.get(
    "/{job_id}/result.zip",
    summary="The whole result store as one zip file, streamed",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}},
                     "description": "A zip holding `result.zarr/...`."},
               **problem_responses(404, 409, 410)},
)
def result_zip(job_id: str, store: StoreDep, user: CurrentUser) -> StreamingResponse:
    job = finished_result(store, job_id, user)
    root = Path(job.result_path).resolve()
    return StreamingResponse(
        zip_stream(root, folder=root.name), media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="caimx-{job_id}.zip"'},
    )  # fmt: skip
