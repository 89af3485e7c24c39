"""``/v1/uploads``: resumable uploads with the tus 1.0 protocol (core, creation, termination,
checksum, expiration), for movies too big for one request.

Create with ``POST`` (``Upload-Length``, and ``Upload-Metadata`` with ``filename`` and the whole
file's ``sha256`` in hex), send bytes with ``PATCH`` (``Upload-Offset``), ask where to resume with
``HEAD``, cancel with ``DELETE``. A complete upload whose bytes do not hash to the announced
SHA-256 is refused (460) and removed. Then ``POST /v1/jobs`` names it:
``{"source": {"upload_id": ...}}``.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from caimx.upload_store import Upload, UploadStore
from service import limits
from service.auth import CurrentUser, owned_upload
from service.deps import PrefixDep, RedisDep, SettingsDep, StoreDep
from service.errors import (
    BadUploadError,
    ChecksumMismatchError,
    TusVersionError,
    UnsupportedMediaError,
    UploadBusyError,
    UploadConflictError,
    UploadInUseError,
    UploadTooLargeError,
    problem_responses,
)
from service.resumable import CHECKSUM_ALGORITHMS, append, parse_checksum

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination,checksum,expiration"
OFFSET_TYPE = "application/offset+octet-stream"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

router = APIRouter(prefix="/uploads", tags=["uploads"])


def get_uploads(client: RedisDep, prefix: PrefixDep) -> UploadStore:
    return UploadStore(client, prefix=prefix)


UploadsDep = Annotated[UploadStore, Depends(get_uploads)]


def get_owned_upload(upload_id: str, uploads: UploadsDep, user: CurrentUser) -> Upload:
    """The upload named in the path, if the caller may use it; 404 otherwise."""
    return owned_upload(uploads, upload_id, user)


OwnedUploadDep = Annotated[Upload, Depends(get_owned_upload)]


def check_tus(tus_resumable: Annotated[str | None, Header()] = None) -> None:
    if tus_resumable != TUS_VERSION:
        raise TusVersionError(
            f"send the header Tus-Resumable: {TUS_VERSION}",
            headers={"Tus-Version": TUS_VERSION, "Tus-Resumable": TUS_VERSION},
        )


TusDep = Depends(check_tus)


class UploadRead(BaseModel):
    """A resumable upload (also the body of the tus creation response)."""

    id: str
    state: str = Field(description="`receiving` until every byte is there, then `complete`.")
    filename: str
    length: int = Field(description="Declared size in bytes (Upload-Length).")
    offset: int = Field(description="Bytes received so far (Upload-Offset).")
    sha256: str | None = Field(description="SHA-256 of the whole file, once complete.")
    expires_at: datetime
    links: dict[str, str]

    model_config = {"json_schema_extra": {"examples": [{
        "id": "8d2f0c5e4b7a4d1e9c3b2a1f0e9d8c7b", "state": "receiving", "filename": "mouse12.tif",
        "length": 2147483648, "offset": 1073741824, "sha256": None,
        "expires_at": "2026-12-02T10:00:00Z",
        "links": {"self": "/v1/uploads/8d2f0c5e4b7a4d1e9c3b2a1f0e9d8c7b"}}]}}  # fmt: skip

    @classmethod
    def of(cls, upload: Upload, expires_at: float) -> UploadRead:
        return cls(id=upload.id, state=upload.state, filename=upload.filename,
                   length=upload.length, offset=upload.offset,
                   sha256=upload.sha256 or None,
                   expires_at=datetime.fromtimestamp(expires_at, tz=UTC),
                   links={"self": f"/v1/uploads/{upload.id}"})  # fmt: skip


def parse_metadata(header: str | None) -> dict[str, str]:
    """tus ``Upload-Metadata``: comma-separated ``key base64value`` pairs."""
    out: dict[str, str] = {}
    for item in (header or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition(" ")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise BadUploadError(f"Upload-Metadata value of {key!r} is not base64 UTF-8") from exc
    return out


def _expires(upload: Upload, hours: float) -> float:
    return upload.updated_at + hours * 3600


def _tus_headers(upload: Upload, hours: float) -> dict[str, str]:
    expires = datetime.fromtimestamp(_expires(upload, hours), tz=UTC)
    return {"Tus-Resumable": TUS_VERSION, "Upload-Offset": str(upload.offset),
            "Upload-Expires": format_datetime(expires, usegmt=True)}  # fmt: skip


@router.options("", status_code=204, summary="tus capabilities of this server",
                response_class=Response)  # fmt: skip
def tus_options(settings: SettingsDep) -> Response:
    return Response(status_code=204, headers={
        "Tus-Resumable": TUS_VERSION, "Tus-Version": TUS_VERSION, "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(settings.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS)})  # fmt: skip


@router.post(
    "",
    status_code=201,
    response_model=UploadRead,
    summary="Create a resumable upload (tus creation)",
    dependencies=[TusDep],
    responses=problem_responses(400, 412, 413),
    openapi_extra={"parameters": [
        {"name": "Upload-Length", "in": "header", "required": True,
         "schema": {"type": "integer"}, "example": 2147483648,
         "description": "Size of the whole file in bytes."},
        {"name": "Upload-Metadata", "in": "header", "required": False,
         "schema": {"type": "string"},
         "example": "filename bW91c2UxMi50aWY=,sha256 "
                    "ZTNiMGM0NDI5OGZjMWMxNDlhZmJmNGM4OTk2ZmI5MjQyN2FlNDFlNDY0OWI5MzRjYTQ5NTk5MWI3ODUyYjg1NQ==",
         "description": "tus metadata: `filename` and `sha256` (hex digest of the whole file), "
                        "each base64-encoded."}]},
)  # fmt: skip
async def create_upload(
    request: Request, response: Response, settings: SettingsDep, uploads: UploadsDep,
    store: StoreDep, user: CurrentUser,
    upload_length: Annotated[str | None, Header()] = None,
    upload_metadata: Annotated[str | None, Header()] = None,
    upload_defer_length: Annotated[str | None, Header()] = None,
) -> UploadRead:  # fmt: skip
    if upload_defer_length is not None:
        raise BadUploadError("Upload-Defer-Length is not supported; send Upload-Length")
    if upload_length is None or not upload_length.isdigit():
        raise BadUploadError("send the size of the whole file in Upload-Length")
    length = int(upload_length)
    if length > settings.max_upload_bytes:
        raise UploadTooLargeError(
            f"the upload is larger than this service accepts ({settings.max_upload_bytes} bytes)",
            max_bytes=settings.max_upload_bytes,
            headers={"Tus-Resumable": TUS_VERSION, "Tus-Max-Size": str(settings.max_upload_bytes)},
        )
    if length == 0:
        raise BadUploadError("the file is empty (Upload-Length 0)")
    meta = parse_metadata(upload_metadata)
    expected = meta.get("sha256", "").strip().lower()
    if expected and not _HEX64.match(expected):
        raise BadUploadError("metadata 'sha256' must be the 64-character hex SHA-256 of the file")
    await run_in_threadpool(limits.check_storage, store, uploads, settings, user, adding=length)
    await run_in_threadpool(limits.reserve_upload_bytes, uploads.client, uploads.prefix,
                            settings, user, length)  # fmt: skip
    folder = settings.resumable_dir
    await run_in_threadpool(folder.mkdir, parents=True, exist_ok=True)
    upload = await run_in_threadpool(
        lambda: uploads.create(length=length, filename=meta.get("filename") or "movie",
                               folder=folder, expected_sha256=expected,
                               metadata=upload_metadata or "", owner=user.name))  # fmt: skip
    await run_in_threadpool(lambda: open(upload.path, "wb").close())
    location = str(request.url_for("head_upload", upload_id=upload.id))
    response.headers.update({"Location": location,
                             **_tus_headers(upload, settings.upload_retention_hours)})
    return UploadRead.of(upload, _expires(upload, settings.upload_retention_hours))


@router.head("/{upload_id}", status_code=200, summary="Where to resume (tus Upload-Offset)",
             dependencies=[TusDep], responses=problem_responses(404, 412),
             response_class=Response)  # fmt: skip
def head_upload(upload: OwnedUploadDep, settings: SettingsDep) -> Response:
    headers = _tus_headers(upload, settings.upload_retention_hours)
    headers.update({"Upload-Length": str(upload.length), "Cache-Control": "no-store"})
    if upload.metadata:
        headers["Upload-Metadata"] = upload.metadata
    return Response(status_code=200, headers=headers)


@router.get("/{upload_id}", response_model=UploadRead, summary="State of a resumable upload",
            responses=problem_responses(404))  # fmt: skip
def get_upload(upload: OwnedUploadDep, settings: SettingsDep) -> UploadRead:
    return UploadRead.of(upload, _expires(upload, settings.upload_retention_hours))


@router.patch(
    "/{upload_id}",
    status_code=204,
    summary="Append bytes at Upload-Offset (tus core)",
    dependencies=[TusDep],
    response_class=Response,
    responses=problem_responses(400, 404, 409, 412, 413, 415, 423, 460),
    openapi_extra={"requestBody": {"required": True, "content": {OFFSET_TYPE: {
        "schema": {"type": "string", "format": "binary"}}}},
        "parameters": [{"name": "Upload-Offset", "in": "header", "required": True,
                        "schema": {"type": "integer"}, "example": 0},
                       {"name": "Upload-Checksum", "in": "header", "required": False,
                        "schema": {"type": "string"},
                        "example": "sha256 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
                        "description": "Checksum of this request's body (tus checksum)."}]},
)  # fmt: skip
async def patch_upload(
    upload: OwnedUploadDep, request: Request, settings: SettingsDep, uploads: UploadsDep,
    upload_offset: Annotated[str | None, Header()] = None,
    upload_checksum: Annotated[str | None, Header()] = None,
    content_type: Annotated[str | None, Header()] = None,
) -> Response:  # fmt: skip
    if (content_type or "").split(";")[0].strip().lower() != OFFSET_TYPE:
        raise UnsupportedMediaError(f"send PATCH bodies as {OFFSET_TYPE}")
    if upload_offset is None or not upload_offset.isdigit():
        raise BadUploadError("send the offset of this request's first byte in Upload-Offset")
    checksum = parse_checksum(upload_checksum)
    headers = _tus_headers(upload, settings.upload_retention_hours)
    if int(upload_offset) != upload.offset:
        raise UploadConflictError(
            f"the upload is at offset {upload.offset}, not {upload_offset}; resume from there",
            offset=upload.offset, headers=headers,
        )  # fmt: skip
    if upload.complete:
        return Response(status_code=204, headers=headers)
    token = await run_in_threadpool(uploads.lock, upload.id)
    if token is None:
        raise UploadBusyError("another request is writing to this upload", headers=headers)
    try:
        result = await append(request, upload, uploads, checksum=checksum)
    finally:
        await run_in_threadpool(uploads.unlock, upload.id, token)
    if result.sha256 is not None:
        if upload.expected_sha256 and result.sha256 != upload.expected_sha256:
            await run_in_threadpool(uploads.delete, upload.id)
            raise ChecksumMismatchError(
                f"the file's SHA-256 is {result.sha256}, not {upload.expected_sha256} as announced "
                "in Upload-Metadata; the upload was removed, upload the file again",
                sha256=result.sha256, expected_sha256=upload.expected_sha256,
                headers={"Tus-Resumable": TUS_VERSION},
            )  # fmt: skip
        upload = await run_in_threadpool(lambda: uploads.complete(upload.id, sha256=result.sha256))
    else:
        upload = await run_in_threadpool(uploads.get, upload.id)
    return Response(status_code=204, headers=_tus_headers(upload, settings.upload_retention_hours))


@router.delete("/{upload_id}", status_code=204, summary="Remove an upload (tus termination)",
               dependencies=[TusDep], response_class=Response,
               responses=problem_responses(404, 409, 412))  # fmt: skip
def delete_upload(upload: OwnedUploadDep, uploads: UploadsDep, store: StoreDep) -> Response:
    active = [j for j in uploads.job_ids(upload.id)
              if store.exists(j) and not store.state(j).terminal]  # fmt: skip
    if active:
        raise UploadInUseError(f"job {active[0]} still uses this upload; cancel it first",
                                    jobs=active)  # fmt: skip
    uploads.delete(upload.id)
    return Response(status_code=204, headers={"Tus-Resumable": TUS_VERSION})
