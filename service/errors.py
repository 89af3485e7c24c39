"""Every error the API returns, as RFC 9457 ``application/problem+json``, mapped in one place."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from caimx.jobs import InvalidTransitionError, UnknownJobError
from caimx.upload_store import UnknownUploadError
from model.io import MovieFormatError, MovieOptionError, UnsupportedFormatError

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "urn:caimx:problem:"
log = logging.getLogger(__name__)


class Problem(BaseModel):
    """RFC 9457 problem details; extension members are allowed."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank", description="URI identifying the kind of problem.")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="HTTP status code.")
    detail: str | None = Field(default=None, description="What went wrong with this request.")
    instance: str | None = Field(default=None, description="The request path.")


class ApiError(Exception):
    """A problem raised by the service itself (not a domain error from caimx or model)."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None,
                 **extensions: Any) -> None:  # fmt: skip
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


class UnauthorizedError(ApiError):
    """401, with the ``WWW-Authenticate`` challenge RFC 6750 asks for."""

    status, slug, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str, *, error: str | None = None) -> None:
        challenge = 'Bearer realm="caimx"' + (f', error="{error}"' if error else "")
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class ForbiddenError(ApiError):
    status, slug, title = 403, "forbidden", "Forbidden"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={
            "WWW-Authenticate": 'Bearer realm="caimx", error="insufficient_scope"'})


class QuotaExceededError(ApiError):
    """429 with ``Retry-After``: a per-user limit (active jobs, uploads per day, storage)."""

    status, slug, title = 429, "quota-exceeded", "Limit reached"


class UploadTooLargeError(ApiError):
    status, slug, title = 413, "upload-too-large", "Upload too large"


class UnsafeArchiveError(ApiError):
    status, slug, title = 422, "unsafe-archive", "The archive cannot be unpacked safely"


class BadUploadError(ApiError):
    status, slug, title = 400, "bad-upload", "Bad upload"


class UnsupportedMediaError(ApiError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class MovieTooSmallError(ApiError):
    status, slug, title = 422, "movie-too-small", "Movie too small for the model"


class InvalidParamsError(ApiError):
    status, slug, title = 422, "invalid-parameters", "Parameters that cannot apply to this movie"


class UnknownModelNameError(ApiError):
    status, slug, title = 422, "unknown-model", "Unknown model"


class QueueUnavailableError(ApiError):
    status, slug, title = 503, "queue-unavailable", "Job queue unavailable"


class NotReadyError(ApiError):
    status, slug, title = 503, "not-ready", "Service not ready"


class ResultNotReadyError(ApiError):
    status, slug, title = 409, "result-not-ready", "Result not ready"


class ResultExpiredError(ApiError):
    status, slug, title = 410, "result-expired", "Result expired"


class ResultKeyNotFoundError(ApiError):
    status, slug, title = 404, "no-such-key", "No such key in the result store"


class ChecksumMismatchError(ApiError):
    """tus checksum extension: 460 when the bytes do not hash to what the client announced."""

    status, slug, title = 460, "checksum-mismatch", "Checksum mismatch"


class UploadConflictError(ApiError):
    status, slug, title = 409, "upload-offset-mismatch", "Upload offset mismatch"


class UploadBusyError(ApiError):
    status, slug, title = 423, "upload-busy", "Upload is being written by another request"


class UploadIncompleteError(ApiError):
    status, slug, title = 409, "upload-incomplete", "Upload not complete"


class UploadInUseError(ApiError):
    status, slug, title = 409, "upload-in-use", "Upload in use by a job"


class TusVersionError(ApiError):
    status, slug, title = 412, "tus-version", "Unsupported tus version"


class SourceForbiddenError(ApiError):
    status, slug, title = 403, "source-forbidden", "Path outside the allowed roots"


class SourceInvalidError(ApiError):
    status, slug, title = 422, "invalid-source", "Invalid movie source"


class IdempotencyConflictError(ApiError):
    status, slug, title = 422, "idempotency-key-reused", "Idempotency key reused"


class RequestInProgressError(ApiError):
    status, slug, title = 409, "request-in-progress", "Request in progress"


class WebhooksDisabledError(ApiError):
    status, slug, title = 422, "webhooks-disabled", "Webhooks are not configured"


# Domain errors from caimx and model, and how they look over HTTP.
DOMAIN_ERRORS: dict[type[Exception], tuple[int, str, str]] = {
    UnsupportedFormatError: (415, "unsupported-movie-format", "Not a movie format caimx reads"),
    MovieOptionError: (422, "invalid-movie-option", "The movie has no such plane or channel"),
    MovieFormatError: (422, "not-a-movie", "Not a usable movie"),
    UnknownJobError: (404, "unknown-job", "Unknown job"),
    UnknownUploadError: (404, "unknown-upload", "Unknown upload"),
    InvalidTransitionError: (409, "invalid-job-state", "Job is not in the right state"),
    redis.RedisError: (503, "store-unavailable", "Job store unavailable"),
}


def problem_response(
    request: Request, status: int, *, slug: str | None, title: str, detail: str | None, **ext: Any
) -> JSONResponse:
    body = Problem(
        type=f"{PROBLEM_BASE}{slug}" if slug else "about:blank",
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        **ext,
    )
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _domain(exc: Exception) -> tuple[int, str, str]:
    for cls in type(exc).__mro__:
        if cls in DOMAIN_ERRORS:
            return DOMAIN_ERRORS[cls]
    raise LookupError(type(exc))


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    response = problem_response(
        request, exc.status, slug=exc.slug, title=exc.title, detail=exc.detail, **exc.extensions
    )
    response.headers.update(exc.headers)
    return response


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    status, slug, title = _domain(exc)
    return problem_response(request, status, slug=slug, title=title, detail=str(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    title = HTTPStatus(exc.status_code).phrase
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
    response = problem_response(request, exc.status_code, slug=None, title=title, detail=detail)
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return problem_response(
        request,
        422,
        slug="invalid-request",
        title="Invalid request",
        detail="The request does not match the API schema.",
        errors=errors,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        request,
        500,
        slug="internal-error",
        title="Internal server error",
        detail="The service failed unexpectedly; the error is in its log.",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register every mapping above on ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    for cls in DOMAIN_ERRORS:
        app.add_exception_handler(cls, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem+json bodies."""
    return {
        status: {
            "model": Problem,
            "description": _PHRASES.get(status) or HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {}},
        }
        for status in statuses
    }


_PHRASES = {460: "Checksum Mismatch (tus)"}
