"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
import redis.asyncio
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from caimx import __version__
from caimx.jobs import DEFAULT_PREFIX
from caimx.logging_config import configure_logging
from caimx.queue import TASK_CLEANUP, make_celery, send
from caimx.settings import Settings, get_settings
from service.api import health, metrics
from service.api.v1 import router as v1_router
from service.api.web import install_web_page
from service.auth import current_user
from service.errors import install_error_handlers
from service.request_log import RequestLogMiddleware

log = logging.getLogger(__name__)
ASYNC_REDIS_CONNECTIONS = 64
"""Redis connections of one API process's asyncio client (each request holds one for one read)."""
ASYNC_REDIS_WAIT_S = 10.0
"""How long a request waits for a free connection before it answers 503."""


def create_app(settings: Settings | None = None, *, prefix: str = DEFAULT_PREFIX) -> FastAPI:
    """Build the API for ``settings`` (default: the process settings from ``CAIMX_*``).

    Refuses to start without ``redis_url``: ``caimx serve`` sets it to the embedded Redis.
    """
    settings = settings or get_settings()
    if not settings.redis_url:
        raise ValueError(
            "CAIMX_REDIS_URL is not set; run `caimx serve` (which starts a private Redis) or "
            "point CAIMX_REDIS_URL at the lab's Redis"
        )
    if not settings.auth_enabled and not settings.loopback_only:
        raise ValueError(
            f"CAIMX_AUTH_ENABLED is off but the API would listen on {settings.host}; without API "
            "keys it may only listen on 127.0.0.1. Create keys with `caimx users add NAME`"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings, process="api")
        settings.uploads_dir.mkdir(parents=True, exist_ok=True)
        settings.results_dir.mkdir(parents=True, exist_ok=True)
        app.state.redis = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        # The hot read paths (key check, job status) use asyncio Redis: no thread per request.
        # A blocking pool: past its size a request waits for a connection instead of failing.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.redis_url, decode_responses=True, max_connections=ASYNC_REDIS_CONNECTIONS,
            timeout=ASYNC_REDIS_WAIT_S)  # fmt: skip
        app.state.aredis = redis.asyncio.Redis(connection_pool=pool)
        app.state.celery = make_celery(settings)
        log.info("caimx API %s: data in %s, models in %s", __version__, settings.data_dir,
                 settings.models_dir)  # fmt: skip
        if not settings.auth_enabled:
            log.warning("AUTHENTICATION IS OFF: every request is the admin user 'local'. This is "
                        "for one person on this machine only (the API listens on %s); set "
                        "CAIMX_AUTH_ENABLED=true for anything shared", settings.host)  # fmt: skip
        scheduler = asyncio.create_task(_schedule_cleanup(app, settings, prefix))
        try:
            yield
        finally:
            scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scheduler
            app.state.celery.close()
            app.state.redis.close()
            await app.state.aredis.aclose()

    app = FastAPI(
        title="caimx",
        version=__version__,
        summary="Two-photon calcium-imaging movies to neuron footprints and traces.",
        description=(
            "Upload a movie (small: multipart `POST /v1/jobs`; big: resumable tus upload to "
            "`/v1/uploads`, then `POST /v1/jobs` with its `upload_id`), or name a file on shared "
            "storage (`POST /v1/jobs` with `source.path`). Poll `GET /v1/jobs/{id}` (it sends "
            "`Retry-After`) until it is `succeeded`, then read the result as a Zarr v3 store at "
            "`/v1/jobs/{id}/zarr` or download `/v1/jobs/{id}/result.zip`. "
            "Errors are `application/problem+json` (RFC 9457). See docs/jobs.md."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.prefix = prefix
    install_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(RequestLogMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
            allow_methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Tus-Resumable",
                           "Upload-Length", "Upload-Offset", "Upload-Metadata", "Upload-Checksum",
                           "Range"],
            expose_headers=["Location", "Retry-After", "Link", "ETag", "Tus-Resumable",
                            "Upload-Offset", "Upload-Length", "Upload-Expires"],
        )  # fmt: skip
    authenticated = [Depends(current_user)]
    app.include_router(health.router)
    app.include_router(metrics.router, dependencies=authenticated)
    install_web_page(app)
    app.include_router(v1_router, prefix="/v1", dependencies=authenticated)
    return app


async def _schedule_cleanup(app: FastAPI, settings: Settings, prefix: str) -> None:
    """Queue ``caimx.cleanup`` every ``cleanup_interval_s``; a Redis lock makes it once per
    interval however many API processes run."""
    interval = settings.cleanup_interval_s
    while True:
        await asyncio.sleep(interval)
        try:
            lock = f"{prefix}:cleanup:scheduled"
            if app.state.redis.set(lock, "1", nx=True, ex=max(interval - 1, 1)):
                send(app.state.celery, TASK_CLEANUP)
        except Exception as exc:  # Redis away for a moment: try again next time
            log.warning("could not queue the cleanup task: %s", exc)


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema plus the models of bodies that routes parse themselves (``JobCreate``)."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    from service.schemas import JobCreate

    schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                         description=app.description, routes=app.routes)  # fmt: skip
    extra = JobCreate.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(extra.pop("$defs", {}))
    components["JobCreate"] = extra
    app.openapi_schema = schema
    return schema
