"""Appending a tus ``PATCH`` body to an upload's file: streamed, hashed, kept when cut off.

The body is written as it arrives, in blocks of a few MiB (the API never holds more), and hashed
on the way. The running SHA-256 of the whole file is kept in this process between requests, keyed
by upload and offset; a request that continues an upload this process has not seen (another API
process, a restart) hashes the bytes already on disk once. If the client goes away mid-request,
the bytes received so far are kept and the offset recorded, so the upload resumes from there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from caimx.upload_store import Upload, UploadStore
from service.errors import BadUploadError, ChecksumMismatchError, UploadTooLargeError

BLOCK = 4 * 1024 * 1024
CHECKSUM_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}


class _HashCache:
    """The running whole-file hash of recent uploads: ``upload id -> (offset, hash object)``."""

    def __init__(self, size: int = 64) -> None:
        self._items: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def take(self, upload_id: str, offset: int) -> Any | None:
        with self._lock:
            item = self._items.pop(upload_id, None)
        if item is not None and item[0] == offset:
            return item[1]
        return None

    def put(self, upload_id: str, offset: int, digest: Any) -> None:
        with self._lock:
            self._items[upload_id] = (offset, digest)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        with self._lock:
            self._items.pop(upload_id, None)


HASHES = _HashCache()


def _hash_prefix(path: Path, offset: int) -> Any:
    digest = hashlib.sha256()
    remaining = offset
    with path.open("rb") as handle:
        while remaining > 0:
            block = handle.read(min(BLOCK, remaining))
            if not block:
                break
            digest.update(block)
            remaining -= len(block)
    return digest


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """``Upload-Checksum: <algorithm> <base64 digest>`` (tus checksum extension)."""
    if not header:
        return None
    try:
        algorithm, encoded = header.strip().split(" ", 1)
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise BadUploadError("Upload-Checksum must be '<algorithm> <base64 digest>'") from exc
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadUploadError(f"checksum algorithm {algorithm!r} is not supported; use "
                             f"{', '.join(CHECKSUM_ALGORITHMS)}")  # fmt: skip
    return algorithm, digest


@dataclass
class AppendResult:
    offset: int
    disconnected: bool
    sha256: str | None
    """Hex SHA-256 of the whole file once the upload is complete."""


def _write(handle: Any, data: bytes, *digests: Any) -> None:
    handle.write(data)
    for digest in digests:
        digest.update(data)


async def append(
    request: Request, upload: Upload, uploads: UploadStore, *, checksum: tuple[str, bytes] | None
) -> AppendResult:
    """Write the request body at ``upload.offset``; returns the new offset.

    Raises
    ------
    UploadTooLargeError
        The body goes past the declared ``Upload-Length`` (what fits is kept).
    ChecksumMismatchError
        ``checksum`` was given and the body does not match it (the body is discarded).
    """
    path = Path(upload.path)
    start = upload.offset
    whole = HASHES.take(upload.id, start)
    if whole is None:
        whole = await run_in_threadpool(_hash_prefix, path, start)
    part = CHECKSUM_ALGORITHMS[checksum[0]]() if checksum else None
    digests = (whole, part) if part is not None else (whole,)
    offset, buffer, disconnected, too_long = start, bytearray(), False, False
    handle = await run_in_threadpool(path.open, "r+b")
    try:
        await run_in_threadpool(handle.seek, start)
        await run_in_threadpool(handle.truncate, start)
        try:
            async for chunk in request.stream():
                if offset + len(buffer) + len(chunk) > upload.length:
                    chunk = chunk[: upload.length - offset - len(buffer)]
                    too_long = True
                buffer += chunk
                if len(buffer) >= BLOCK or too_long:
                    data, buffer = bytes(buffer), bytearray()
                    await run_in_threadpool(_write, handle, data, *digests)
                    offset += len(data)
                    if part is None:  # with a checksum nothing counts until it matches
                        await run_in_threadpool(uploads.set_offset, upload.id, offset)
                if too_long:
                    break
        except ClientDisconnect:
            disconnected = True
        if buffer:
            data = bytes(buffer)
            await run_in_threadpool(_write, handle, data, *digests)
            offset += len(data)
        await run_in_threadpool(handle.flush)
        if part is not None and (disconnected or part.digest() != checksum[1]):
            await run_in_threadpool(handle.truncate, start)
            HASHES.drop(upload.id)
            await run_in_threadpool(uploads.set_offset, upload.id, start)
            if disconnected:
                return AppendResult(start, True, None)
            raise ChecksumMismatchError(
                f"the bytes of this request do not match its Upload-Checksum ({checksum[0]}); "
                f"they were discarded and the upload stays at offset {start}",
                offset=start,
            )
    finally:
        await run_in_threadpool(handle.close)
    await run_in_threadpool(uploads.set_offset, upload.id, offset)
    HASHES.put(upload.id, offset, whole)
    if too_long:
        raise UploadTooLargeError(
            f"the request goes past the declared Upload-Length of {upload.length} bytes; "
            f"{offset - start} bytes were kept",
            offset=offset,
        )
    done = offset == upload.length
    if done:
        HASHES.drop(upload.id)
    return AppendResult(offset, disconnected, whole.hexdigest() if done else None)
