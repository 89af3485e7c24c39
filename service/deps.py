"""FastAPI dependencies: the pieces a route needs, taken from the running app (no globals)."""

from __future__ import annotations

from typing import Annotated

import redis
from celery import Celery
from fastapi import Depends, Request

from caimx.jobs import JobStore
from caimx.settings import Settings


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_redis(request: Request) -> redis.Redis:
    return request.app.state.redis


def get_store(request: Request) -> JobStore:
    return JobStore(request.app.state.redis, writer="service", prefix=request.app.state.prefix)


def get_prefix(request: Request) -> str:
    return request.app.state.prefix


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
StoreDep = Annotated[JobStore, Depends(get_store)]
PrefixDep = Annotated[str, Depends(get_prefix)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
