"""Where a job's movie comes from: a finished resumable upload, a path on shared storage, or an
fsspec URL.

A referenced path is relative to one of the configured ``allowed_roots`` (or absolute inside one).
It is refused when it climbs out (``..``), hides characters (percent escapes, backslashes, NUL),
or resolves, through symlinks, to a place outside every root. A URL must start with one of
``remote_allowed_prefixes`` (:mod:`caimx.remote`); the object must exist and be readable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from caimx.job_params import MovieOptions
from caimx.remote import RemoteURLForbidden, RemoteURLInvalid, check_url, storage_options
from caimx.upload_store import UnknownUploadError, UploadStore
from service.errors import SourceForbiddenError, SourceInvalidError, UploadIncompleteError

_ESCAPES = re.compile(r"%[0-9a-fA-F]{2}")


class JobSource(MovieOptions):
    """Exactly one of ``upload_id`` (a complete tus upload), ``path`` (shared storage) and ``url``
    (an fsspec URL under the service's allowed prefixes)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"path": "rig3/2026-11-20/mouse12_plane1.tif"},
        {"upload_id": "8d2f0c5e4b7a4d1e9c3b2a1f0e9d8c7b"},
        {"path": "rig1/session4.h5", "dataset": "/imaging/mov"},
        {"path": "rig2/2026-11-21/fastz_00001.tif", "plane": 2, "channel": 0},
        {"url": "s3://lab-rigs/rig3/2026-11-20/mouse12_plane1.tif"}]})  # fmt: skip

    upload_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$",
                                  description="A complete upload from POST /v1/uploads.")
    path: str | None = Field(default=None, min_length=1, max_length=4096,
                             description="A movie under one of the allowed roots (relative path).")
    url: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="A movie behind an fsspec URL (s3://, gs://, https://...) under the "
                    "service's CAIMX_REMOTE_ALLOWED_PREFIXES, read lazily by the worker: a TIFF, "
                    "HDF5, NWB or .npy file, or a Zarr store.",
        examples=["s3://lab-rigs/rig3/2026-11-20/mouse12_plane1.tif"],
    )  # fmt: skip

    @model_validator(mode="after")
    def _one(self) -> JobSource:
        if sum(v is not None for v in (self.upload_id, self.path, self.url)) != 1:
            raise ValueError("give exactly one of 'upload_id', 'path' and 'url'")
        return self


@dataclass(frozen=True)
class ResolvedSource:
    path: Path | str
    """A local file or folder, or (``kind`` url) the URL."""
    name: str
    size: int
    sha256: str
    record: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)


def resolve_path(text: str, roots: list[Path]) -> Path:
    """The real path of ``text`` inside one of ``roots``.

    Raises
    ------
    SourceInvalidError (422)
        Malformed, or no such file or folder in any root.
    SourceForbiddenError (403)
        Outside every root (absolute elsewhere, ``..``, or a symlink that leads out).
    """
    if not roots:
        raise SourceForbiddenError("this service has no allowed roots (CAIMX_ALLOWED_ROOTS); "
                                   "upload the movie instead")  # fmt: skip
    if "\x00" in text or "\\" in text or _ESCAPES.search(text):
        raise SourceInvalidError("the path contains a NUL byte, a backslash or a %-escape; send "
                                 "it as plain text with '/' between folders")  # fmt: skip
    pure = PurePosixPath(text)
    if ".." in pure.parts:
        raise SourceForbiddenError("the path may not contain '..'")
    candidates = [Path(pure)] if pure.is_absolute() else [root / pure for root in roots]
    for candidate in candidates:
        if not candidate.exists() and not candidate.is_symlink():
            continue
        real = candidate.resolve()
        if not any(real == root or real.is_relative_to(root) for root in roots):
            raise SourceForbiddenError(f"{text!r} leads outside the allowed roots")
        if not real.exists():
            break
        return real
    if pure.is_absolute() and not any(Path(pure).is_relative_to(r) for r in roots):
        raise SourceForbiddenError(f"{text!r} is outside the allowed roots")
    raise SourceInvalidError(f"there is no {text!r} under the allowed roots",
                             roots=[str(r) for r in roots])  # fmt: skip


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def resolve_url(url: str, *, prefixes: list[str],
                remote_options: dict[str, dict[str, Any]]) -> tuple[str, int]:  # fmt: skip
    """The canonical URL and its size in bytes (0 for a Zarr store).

    Raises
    ------
    SourceForbiddenError (403)
        Not under an allowed prefix (see :mod:`caimx.remote`), or access refused by the store.
    SourceInvalidError (422)
        Malformed, credentials or a query in it, no such object, or the protocol's package missing.
    """
    from model.io.remote import RemoteSourceError, remote_info

    try:
        url = check_url(url, prefixes)
    except RemoteURLForbidden as exc:
        raise SourceForbiddenError(str(exc)) from exc
    except RemoteURLInvalid as exc:
        raise SourceInvalidError(str(exc)) from exc
    try:
        info = remote_info(url, storage_options=storage_options(url, remote_options))
    except RemoteSourceError as exc:
        if exc.reason == "forbidden":
            raise SourceForbiddenError(str(exc)) from exc
        raise SourceInvalidError(str(exc)) from exc
    return url, int(info["size"])


def resolve_source(source: JobSource, *, roots: list[Path], uploads: UploadStore,
                   remote_prefixes: list[str] | None = None,
                   remote_options: dict[str, dict[str, Any]] | None = None,
                   ) -> ResolvedSource:  # fmt: skip
    """Check the source and describe it; the movie itself is checked by ``inspect_movie``."""
    options = source.model_dump(include={"dataset", "channel", "plane"}, exclude_none=True)
    if source.url is not None:
        url, size = resolve_url(source.url, prefixes=remote_prefixes or [],
                                remote_options=remote_options or {})  # fmt: skip
        name = url.rstrip("/").rsplit("/", 1)[-1] or url
        return ResolvedSource(path=url, name=name, size=size, sha256="",
                              record={"kind": "url", "url": url, **options},
                              options=options)  # fmt: skip
    if source.upload_id is not None:
        try:
            upload = uploads.get(source.upload_id)
        except UnknownUploadError:
            raise
        if not upload.complete:
            raise UploadIncompleteError(
                f"upload {upload.id} has {upload.offset} of {upload.length} bytes; finish it first",
                offset=upload.offset, length=upload.length,
            )  # fmt: skip
        return ResolvedSource(path=Path(upload.path), name=upload.filename, size=upload.length,
                              sha256=upload.sha256,
                              record={"kind": "upload", "upload_id": upload.id, **options},
                              options=options)  # fmt: skip
    assert source.path is not None
    real = resolve_path(source.path, roots)
    return ResolvedSource(path=real, name=real.name, size=_size(real), sha256="",
                          record={"kind": "path", "path": source.path, **options},
                          options=options)  # fmt: skip
