"""Removing what has outlived the retention period, never anything a queued or running job needs.

- results (``results/<job id>/``) of jobs finished more than ``result_retention_hours`` ago: the
  folder goes, the job record stays with ``expired_at`` set (its result answers 410 Gone);
- resumable uploads idle for ``upload_retention_hours`` whose jobs have all finished;
- multipart uploads (``uploads/<job id>/``) of jobs finished past the result retention;
- leftovers with no job record at all (a crash between writing and recording), once old.

Used by the ``caimx.cleanup`` task (queued by the API every ``cleanup_interval_s``) and by
``caimx cleanup``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from caimx.jobs import JobStore, UnknownJobError
from caimx.settings import Settings
from caimx.upload_store import UploadStore


@dataclass
class CleanupReport:
    results: list[str] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    kept_active: list[str] = field(default_factory=list)
    """Old items kept because a queued or running job uses them."""

    def as_dict(self) -> dict[str, list[str]]:
        return {"results": self.results, "uploads": self.uploads, "orphans": self.orphans,
                "kept_active": self.kept_active}  # fmt: skip


def _age_s(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except OSError:
        return 0.0


def _job_or_none(store: JobStore, job_id: str):
    try:
        return store.get(job_id)
    except UnknownJobError:
        return None


def cleanup(settings: Settings, store: JobStore, uploads: UploadStore, *,
            now: float | None = None, dry_run: bool = False) -> CleanupReport:  # fmt: skip
    """Remove expired results and uploads; returns what was (or, dry, would be) removed."""
    now = time.time() if now is None else now
    result_cutoff = now - settings.result_retention_hours * 3600
    upload_cutoff = now - settings.upload_retention_hours * 3600
    report = CleanupReport()

    def remove(path: Path) -> None:
        if dry_run:
            return
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    for folder in (settings.results_dir, settings.uploads_dir):
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry == settings.resumable_dir:
                continue
            job = _job_or_none(store, entry.name)
            if job is None:
                if _age_s(entry, now) > settings.result_retention_hours * 3600:
                    report.orphans.append(str(entry))
                    remove(entry)
                continue
            if not job.state.terminal:
                continue
            finished = job.finished_at or job.updated_at
            if finished < result_cutoff:
                (report.results if folder == settings.results_dir else report.uploads).append(
                    str(entry))
                remove(entry)
                if folder == settings.results_dir and not dry_run and not job.expired_at:
                    store.update(job.id, expired_at=now)

    for upload_id in uploads.idle_since(upload_cutoff):
        active = [j for j in uploads.job_ids(upload_id)
                  if (job := _job_or_none(store, j)) is not None and not job.state.terminal]
        if active:
            report.kept_active.append(upload_id)
            continue
        report.uploads.append(upload_id)
        if not dry_run:
            uploads.delete(upload_id)

    resumable = settings.resumable_dir
    if resumable.is_dir():
        for entry in resumable.iterdir():
            upload_id = entry.name.split(".", 1)[0]
            known = uploads.client.exists(uploads.key(upload_id))
            if not known and _age_s(entry, now) > settings.upload_retention_hours * 3600:
                report.orphans.append(str(entry))
                remove(entry)
    return report
