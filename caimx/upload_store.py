"""Resumable uploads: one Redis hash per upload, the bytes in one file on the shared storage.

``{prefix}:upload:{id}`` holds the declared length, the offset received so far, the file name and
the expected SHA-256; ``{prefix}:uploads`` (sorted set, score: last activity) lists them for the
cleanup; ``{prefix}:upload:{id}:jobs`` names the jobs that use the upload, so it is never removed
under a running job. :class:`UploadStore` is the only code that touches these keys.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis

from caimx.jobs import DEFAULT_PREFIX


class UploadState(StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"


class UnknownUploadError(KeyError):
    """No upload with this id (never created, terminated or expired)."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(upload_id)
        self.upload_id = upload_id

    def __str__(self) -> str:
        return f"no upload with id {self.upload_id!r} (it may have expired)"


@dataclass(frozen=True)
class Upload:
    id: str
    state: UploadState
    length: int
    offset: int
    filename: str
    path: str
    created_at: float
    updated_at: float
    expected_sha256: str = ""
    sha256: str = ""
    metadata: str = ""
    """The ``Upload-Metadata`` header as the client sent it (returned by ``HEAD``)."""
    owner: str = ""
    """The user who created the upload (only they and admins may use it)."""

    @property
    def complete(self) -> bool:
        return self.state is UploadState.COMPLETE


_INTS = {"length", "offset"}
_FLOATS = {"created_at", "updated_at"}


class UploadStore:
    """Reads and writes upload records (see the module text)."""

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix

    def key(self, upload_id: str) -> str:
        return f"{self.prefix}:upload:{upload_id}"

    def jobs_key(self, upload_id: str) -> str:
        return f"{self.prefix}:upload:{upload_id}:jobs"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:uploads"

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def create(self, *, length: int, filename: str, folder: Path, expected_sha256: str = "",
               metadata: str = "", owner: str = "") -> Upload:  # fmt: skip
        upload_id = self.new_id()
        now = time.time()
        values: dict[str, Any] = {
            "id": upload_id, "state": UploadState.RECEIVING.value, "length": length, "offset": 0,
            "filename": filename, "path": str(folder / f"{upload_id}.bin"), "created_at": now,
            "updated_at": now, "expected_sha256": expected_sha256, "sha256": "",
            "metadata": metadata, "owner": owner,
        }  # fmt: skip
        with self.client.pipeline() as pipe:
            pipe.hset(self.key(upload_id), mapping={k: str(v) for k, v in values.items()})
            pipe.zadd(self.index_key, {upload_id: now})
            if owner:
                pipe.sadd(self.owner_key(owner), upload_id)
            pipe.execute()
        return self.get(upload_id)

    def owner_key(self, owner: str) -> str:
        return f"{self.prefix}:uploads:owner:{owner}"

    def owned_by(self, owner: str) -> list[Upload]:
        """``owner``'s uploads that still exist."""
        found = []
        for upload_id in self.client.smembers(self.owner_key(owner)):
            try:
                found.append(self.get(upload_id))
            except UnknownUploadError:
                self.client.srem(self.owner_key(owner), upload_id)
        return found

    def get(self, upload_id: str) -> Upload:
        raw = self.client.hgetall(self.key(upload_id))
        if not raw:
            raise UnknownUploadError(upload_id)
        values: dict[str, Any] = {}
        for name in Upload.__dataclass_fields__:
            text = raw.get(name, "")
            if name in _INTS:
                values[name] = int(text or 0)
            elif name in _FLOATS:
                values[name] = float(text or 0)
            elif name == "state":
                values[name] = UploadState(text)
            else:
                values[name] = text
        return Upload(**values)

    def set_offset(self, upload_id: str, offset: int) -> None:
        now = time.time()
        with self.client.pipeline() as pipe:
            pipe.hset(self.key(upload_id), mapping={"offset": offset, "updated_at": repr(now)})
            pipe.zadd(self.index_key, {upload_id: now})
            pipe.execute()

    def complete(self, upload_id: str, *, sha256: str) -> Upload:
        self.client.hset(self.key(upload_id), mapping={
            "state": UploadState.COMPLETE.value, "sha256": sha256, "updated_at": repr(time.time())})
        return self.get(upload_id)

    def lock(self, upload_id: str, *, ttl_s: int = 3600) -> str | None:
        """Take the upload's write lock; returns a token, or ``None`` if another request has it."""
        token = uuid.uuid4().hex
        ok = self.client.set(f"{self.key(upload_id)}:lock", token, nx=True, ex=ttl_s)
        return token if ok else None

    def unlock(self, upload_id: str, token: str) -> None:
        key = f"{self.key(upload_id)}:lock"
        if self.client.get(key) == token:
            self.client.delete(key)

    def add_job(self, upload_id: str, job_id: str) -> None:
        self.client.sadd(self.jobs_key(upload_id), job_id)

    def job_ids(self, upload_id: str) -> set[str]:
        return set(self.client.smembers(self.jobs_key(upload_id)))

    def idle_since(self, before: float) -> list[str]:
        """Uploads with no activity since ``before`` (Unix seconds)."""
        return list(self.client.zrangebyscore(self.index_key, "-inf", repr(before)))

    def delete(self, upload_id: str) -> None:
        """Forget the upload and remove its file (and the folder an archive was unpacked to)."""
        try:
            path = Path(self.get(upload_id).path)
        except UnknownUploadError:
            path = None
        with self.client.pipeline() as pipe:
            key = self.key(upload_id)
            pipe.delete(key, self.jobs_key(upload_id), f"{key}:lock")
            pipe.zrem(self.index_key, upload_id)
            pipe.execute()
        if path is not None:
            path.unlink(missing_ok=True)
            shutil.rmtree(path.with_name(path.name + ".unpacked"), ignore_errors=True)
