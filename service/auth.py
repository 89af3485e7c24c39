"""Who is calling: ``Authorization: Bearer KEY`` checked against the users in Redis.

Every ``/v1`` route and ``/metrics`` depend on :func:`current_user`; the health probes, the web
page and the API documentation do not. A job, upload or result of another user answers 404 (as if
it did not exist), never 403, so ids cannot be probed. With ``auth_enabled`` off (single-user
``caimx serve`` on 127.0.0.1 only) every caller is the admin ``local``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from caimx.jobs import Job, JobStore, UnknownJobError, job_from_record
from caimx.upload_store import UnknownUploadError, Upload, UploadStore
from caimx.users import UserLimits, UserStore, user_from_record
from service.errors import ForbiddenError, UnauthorizedError

LOCAL_USER = "local"
bearer = HTTPBearer(auto_error=False, description="An API key from `caimx users add NAME`.")


@dataclass(frozen=True)
class Principal:
    name: str
    admin: bool
    limits: UserLimits = field(default_factory=UserLimits)

    def may_see(self, owner: str) -> bool:
        return self.admin or (bool(owner) and owner == self.name)


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller; 401 without a valid key."""
    settings = request.app.state.settings
    if not settings.auth_enabled:
        return Principal(LOCAL_USER, admin=True)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise UnauthorizedError("send an API key as 'Authorization: Bearer KEY' "
                                "(keys come from `caimx users add NAME`)")  # fmt: skip
    users = UserStore(request.app.state.redis, prefix=request.app.state.prefix)
    key = credentials.credentials
    known = UserStore.recently_verified(key)
    if known is None:  # first use of this key in this process: scrypt, in a thread
        user = await run_in_threadpool(users.verify, key)
    else:  # the usual case: one asyncio read checks that the user still has this key
        name, key_id = known
        user = user_from_record(await request.app.state.aredis.hgetall(users.key(name)))
        if user is not None and user.key_id != key_id:
            user = None
    if user is None:
        raise UnauthorizedError("the API key is not valid (unknown, replaced or removed)",
                                error="invalid_token")  # fmt: skip
    return Principal(user.name, user.admin, user.limits)


async def admin_user(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    """The caller, who must be an admin; 403 otherwise."""
    if not user.admin:
        raise ForbiddenError("only admins may do this")
    return user


CurrentUser = Annotated[Principal, Depends(current_user)]
AdminUser = Annotated[Principal, Depends(admin_user)]


def owned_job(store: JobStore, job_id: str, user: Principal) -> Job:
    """The job if ``user`` may see it; :class:`UnknownJobError` (404) otherwise."""
    return _visible(store.get(job_id), user)


async def read_owned_job(request: Request, store: JobStore, job_id: str, user: Principal) -> Job:
    """:func:`owned_job` with the app's asyncio Redis client (for the most frequent request)."""
    raw = await request.app.state.aredis.hgetall(store.key(job_id))
    if not raw:
        raise UnknownJobError(job_id)
    return _visible(job_from_record(raw), user)


def _visible(job: Job, user: Principal) -> Job:
    if not user.may_see(job.owner):
        raise UnknownJobError(job.id)
    return job


def owned_upload(uploads: UploadStore, upload_id: str, user: Principal) -> Upload:
    """The upload if ``user`` may use it; :class:`UnknownUploadError` (404) otherwise."""
    upload = uploads.get(upload_id)
    if not user.may_see(upload.owner):
        raise UnknownUploadError(upload_id)
    return upload
