"""FastAPI dependencies: the pieces a route needs, taken from the running app (no globals).

All ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, which costs more
than these lookups.
"""

from __future__ import annotations

from typing import Annotated

import redis
import redis.asyncio
from celery import Celery
from fastapi import Depends, Request

from caimx.jobs import JobStore
from caimx.settings import Settings


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_redis(request: Request) -> redis.Redis:
    return request.app.state.redis


async def get_async_redis(request: Request) -> redis.asyncio.Redis:
    return request.app.state.aredis


async def get_store(request: Request) -> JobStore:
    return JobStore(request.app.state.redis, writer="service", prefix=request.app.state.prefix)


async def get_prefix(request: Request) -> str:
    return request.app.state.prefix


async def get_celery(request: Request) -> Celery:
    return request.app.state.celery


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
AsyncRedisDep = Annotated[redis.asyncio.Redis, Depends(get_async_redis)]
StoreDep = Annotated[JobStore, Depends(get_store)]
PrefixDep = Annotated[str, Depends(get_prefix)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
