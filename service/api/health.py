"""Liveness and readiness probes."""

from __future__ import annotations

import redis
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from caimx import __version__
from caimx.queue import live_workers
from service.deps import PrefixDep, RedisDep
from service.errors import NotReadyError, problem_responses
from service.schemas import Health, Readiness, WorkerRead

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The API process is up")
def healthz() -> Health:
    return Health(version=__version__)


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Redis answers and at least one worker is alive",
    responses=problem_responses(503),
)
async def readyz(client: RedisDep, prefix: PrefixDep) -> Readiness:
    try:
        await run_in_threadpool(client.ping)
    except redis.RedisError as exc:
        raise NotReadyError(f"Redis does not answer ({exc})", redis="down", workers=[]) from exc
    workers = await run_in_threadpool(lambda: live_workers(client, prefix=prefix))
    if not workers:
        raise NotReadyError("no worker is alive; start one with `caimx worker`", redis="ok",
                            workers=[])  # fmt: skip
    return Readiness(workers=[WorkerRead(**w) for w in workers])
