"""Where a job's movie comes from: a finished resumable upload, or a path on shared storage.

A referenced path is relative to one of the configured ``allowed_roots`` (or absolute inside one).
It is refused when it climbs out (``..``), hides characters (percent escapes, backslashes, NUL),
or resolves, through symlinks, to a place outside every root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from caimx.job_params import MovieOptions
from caimx.upload_store import UnknownUploadError, UploadStore
from service.errors import SourceForbiddenError, SourceInvalidError, UploadIncompleteError

_ESCAPES = re.compile(r"%[0-9a-fA-F]{2}")


class JobSource(MovieOptions):
    """Exactly one of ``upload_id`` (a complete tus upload) and ``path`` (shared storage)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"path": "rig3/2026-11-20/mouse12_plane1.tif"},
        {"upload_id": "8d2f0c5e4b7a4d1e9c3b2a1f0e9d8c7b"},
        {"path": "rig1/session4.h5", "dataset": "/imaging/mov"},
        {"path": "rig2/2026-11-21/fastz_00001.tif", "plane": 2, "channel": 0}]})  # fmt: skip

    upload_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$",
                                  description="A complete upload from POST /v1/uploads.")
    path: str | None = Field(default=None, min_length=1, max_length=4096,
                             description="A movie under one of the allowed roots (relative path).")

    @model_validator(mode="after")
    def _one(self) -> JobSource:
        if (self.upload_id is None) == (self.path is None):
            raise ValueError("give exactly one of 'upload_id' and 'path'")
        return self


@dataclass(frozen=True)
class ResolvedSource:
    path: Path
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


def resolve_source(source: JobSource, *, roots: list[Path], uploads: UploadStore) -> ResolvedSource:
    """Check the source and describe it; the movie itself is checked by ``inspect_movie``."""
    options = source.model_dump(include={"dataset", "channel", "plane"}, exclude_none=True)
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
