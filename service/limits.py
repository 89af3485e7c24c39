"""Per-user limits: queued + running jobs, bytes uploaded per UTC day, bytes stored.

Each refusal is 429 problem+json with ``Retry-After``. A limit of 0 means none. The settings give
every user's limits; ``caimx users limits NAME ...`` gives one user other ones (kept in the user's
record, see :class:`caimx.users.UserLimits`). Uploaded bytes are
counted when they are announced (tus ``Upload-Length``) or received (multipart), in
``{prefix}:usage:{user}:uploaded:{date}`` (kept two days). Stored bytes are the user's resumable
uploads, multipart movies and result folders, measured on the shared storage when a job or upload
is created.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from caimx.jobs import JobStore
from caimx.settings import Settings
from caimx.upload_store import UploadStore
from service.archives import unpacked_folder
from service.auth import Principal
from service.errors import QuotaExceededError

_RESERVE = """
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 172800)
if tonumber(ARGV[2]) > 0 and used > tonumber(ARGV[2]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return -1
end
return used
"""


def _until_midnight() -> int:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(int((midnight - now).total_seconds()), 1)


def _own(override: int | None, setting: int) -> int:
    return setting if override is None else override


def usage_key(prefix: str, user: str) -> str:
    return f"{prefix}:usage:{user}:uploaded:{datetime.now(UTC):%Y-%m-%d}"


def check_active_jobs(store: JobStore, settings: Settings, user: Principal) -> None:
    limit = _own(user.limits.active_jobs, settings.max_active_jobs_per_user)
    if limit and store.active_jobs(user.name) >= limit:
        raise QuotaExceededError(
            f"you have {limit} jobs queued or running, the most one user may have; wait for one "
            "to finish", limit=limit, headers={"Retry-After": "30"})  # fmt: skip


def reserve_upload_bytes(client: redis.Redis, prefix: str, settings: Settings, user: Principal,
                         nbytes: int) -> None:  # fmt: skip
    """Count ``nbytes`` against today's upload allowance, or refuse them (nothing counted)."""
    limit = _own(user.limits.upload_bytes_per_day, settings.max_upload_bytes_per_day)
    used = client.eval(_RESERVE, 1, usage_key(prefix, user.name), int(nbytes), int(limit))
    if int(used) < 0:
        raise QuotaExceededError(
            f"this upload would take you over {limit} bytes uploaded today (UTC); try again "
            "tomorrow or ask an admin", limit=limit,
            headers={"Retry-After": str(_until_midnight())})  # fmt: skip


def _folder_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def stored_bytes(store: JobStore, uploads: UploadStore, settings: Settings, owner: str) -> int:
    """Bytes ``owner`` keeps on the shared storage: uploads (unpacked archives too), multipart
    movies and results."""
    total = 0
    for upload in uploads.owned_by(owner):  # the file, and the folder an archive unpacked to
        total += upload.length + _folder_bytes(unpacked_folder(Path(upload.path)))
    for job_id in store.owner_job_ids(owner):
        total += _folder_bytes(settings.results_dir / job_id)
        total += _folder_bytes(settings.uploads_dir / job_id)
    return total


def check_storage(store: JobStore, uploads: UploadStore, settings: Settings, user: Principal,
                  *, adding: int = 0) -> None:  # fmt: skip
    quota = _own(user.limits.storage_bytes, settings.storage_quota_bytes)
    if not quota:
        return
    used = stored_bytes(store, uploads, settings, user.name)
    if used + adding > quota:
        raise QuotaExceededError(
            f"you keep {used} bytes of uploads and results; with {adding} more you would pass "
            f"your quota of {quota} bytes. Delete uploads, or wait for old results to expire",
            limit=quota, used=used,
            headers={"Retry-After": str(int(min(settings.result_retention_hours * 3600, 3600)))},
        )  # fmt: skip



