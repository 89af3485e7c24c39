"""``caimx serve`` (the whole service on one machine) and ``caimx worker`` (one GPU worker)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``worker``."""
    serve = subparsers.add_parser(
        "serve",
        help="run the API, one worker and (without CAIMX_REDIS_URL) a private Redis",
        description=(
            "Start the caimx service on this machine. Without CAIMX_REDIS_URL a private Redis is "
            "started on a free port; data goes to CAIMX_DATA_DIR. Ctrl-C stops everything."
        ),
    )
    serve.add_argument("--host", help="address of the API (default: CAIMX_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port of the API (default: CAIMX_PORT, 8000)")
    serve.add_argument(
        "--no-worker", action="store_true", help="run only the API (workers run elsewhere)"
    )
    serve.add_argument(
        "--api-workers", type=int, help="API processes (default: CAIMX_API_WORKERS, 1)"
    )
    serve.set_defaults(func=run_serve)

    worker = subparsers.add_parser(
        "worker",
        help="run one worker that takes jobs from the queue (needs CAIMX_REDIS_URL)",
        description=(
            "Start a Celery worker on the Redis in CAIMX_REDIS_URL. Queue 'gpu' carries the "
            "chunks of every job, queue 'cpu' planning, finalizing, webhooks and cleanup; by "
            "default a worker takes both. Lab-wide, run GPU hosts with --queues gpu and one or "
            "more CPU hosts with --queues cpu."
        ),
    )
    worker.add_argument(
        "--queues", default="gpu,cpu", help="comma-separated queues to consume (default: gpu,cpu)"
    )
    worker.add_argument(
        "--concurrency", type=int, help="processes (default: CAIMX_WORKER_CONCURRENCY, 1)"
    )
    worker.add_argument("--name", default="caimx@%h", help="worker node name (default: caimx@%%h)")
    worker.add_argument("--loglevel", default="INFO", help="log level (default: INFO)")
    worker.set_defaults(func=run_worker)


def require_worker(args: argparse.Namespace, settings: Any) -> None:
    """Refuse to start a worker (or a service with one) that would fail on its first task: the
    network's packages are imported only then."""
    from caimx.cli import require

    require(args, "celery", "keras",
            *(("tensorflow",) if settings.model_runtime == "savedmodel" else ()))  # fmt: skip


def run_serve(args: argparse.Namespace) -> int:
    from caimx.cli import CliError, require

    require(args, "pydantic_settings", "redis", "fastapi", "uvicorn", "python_multipart")
    from caimx.embedded import LaunchError, serve
    from caimx.settings import get_settings

    settings = get_settings()
    if not args.no_worker:
        require_worker(args, settings)
    try:
        return serve(
            settings,
            host=args.host or settings.host,
            port=args.port or settings.port,
            with_worker=not args.no_worker,
            api_workers=args.api_workers or settings.api_workers,
        )
    except LaunchError as exc:
        raise CliError(str(exc)) from exc


def run_worker(args: argparse.Namespace) -> int:
    from caimx.cli import CliError
    from caimx.settings import get_settings

    settings = get_settings()
    require_worker(args, settings)
    if not settings.redis_url:
        raise CliError("caimx worker needs CAIMX_REDIS_URL, the Redis that the API uses")
    from caimx.memory import limit_malloc_arenas
    from caimx.telemetry import instrument_worker
    from worker.celery_app import create_celery

    limit_malloc_arenas(settings.malloc_arena_max)  # the task processes fork from this one

    instrument_worker(settings)
    from caimx.queue import QUEUES

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        raise CliError(f"unknown queue(s) {unknown or queues}; the queues are {', '.join(QUEUES)}")
    app = create_celery(settings)
    concurrency = args.concurrency or settings.worker_concurrency
    app.worker_main(
        [
            "worker",
            "--queues", ",".join(queues),
            "--concurrency", str(concurrency),
            "--pool", "prefork",
            "--hostname", args.name,
            "--loglevel", args.loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )  # fmt: skip
    return 0
