"""``caimx cleanup``: remove results and uploads older than the retention period, now."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    cleanup = subparsers.add_parser(
        "cleanup",
        help="remove expired results and uploads (never those of queued or running jobs)",
        description=(
            "Remove job results older than CAIMX_RESULT_RETENTION_HOURS and resumable uploads "
            "idle for CAIMX_UPLOAD_RETENTION_HOURS, as the cleanup task does every "
            "CAIMX_CLEANUP_INTERVAL_S. Needs CAIMX_REDIS_URL."
        ),
    )
    cleanup.add_argument("--dry-run", action="store_true", help="only list what would go")
    cleanup.set_defaults(func=run_cleanup)


def run_cleanup(args: argparse.Namespace) -> int:
    from caimx.cli import CliError
    from caimx.jobs import JobStore
    from caimx.retention import cleanup
    from caimx.settings import get_settings
    from caimx.upload_store import UploadStore

    settings = get_settings()
    if not settings.redis_url:
        raise CliError("caimx cleanup needs CAIMX_REDIS_URL, the Redis that the API uses")
    store = JobStore.from_url(settings.redis_url, writer="cleanup")
    report = cleanup(settings, store, UploadStore(store.client), dry_run=args.dry_run)
    print(json.dumps(report.as_dict(), indent=2))
    return 0
