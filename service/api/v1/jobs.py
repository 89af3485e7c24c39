"""``/v1/jobs``: submit a movie (multipart, resumable upload or shared path), follow, cancel.

A job is recorded ``queued`` and ``caimx.prepare_job`` is sent to queue ``cpu``; the worker plans
the chunks, runs one ``caimx.run_chunk`` task per chunk on queue ``gpu`` and finalizes on ``cpu``.
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from caimx.job_params import JobParams, MovieOptions, engine_overrides
from caimx.jobs import Job, JobState, JobStore
from caimx.queue import TASK_PREPARE_JOB, TASK_WEBHOOK, send
from caimx.remote import storage_options
from caimx.upload_store import UploadStore
from service import idempotency, limits
from service.archives import unpack_upload
from service.auth import CurrentUser, Principal, owned_job, owned_upload, read_owned_job
from service.deps import CeleryDep, PrefixDep, RedisDep, SettingsDep, StoreDep
from service.errors import (
    BadUploadError,
    QueueUnavailableError,
    ResultExpiredError,
    ResultNotReadyError,
    WebhooksDisabledError,
    problem_responses,
)
from service.schemas import JobCreate, JobList, JobRead, ResultRead
from service.sources import ResolvedSource, resolve_source
from service.submission import check_resampling, choose_model, inspect_movie
from service.uploads import receive_multipart

router = APIRouter(prefix="/jobs", tags=["jobs"])
log = logging.getLogger(__name__)
MAX_JSON_BYTES = 64 * 1024

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/JobCreate"},
                "examples": {
                    "path": {"summary": "A movie on shared storage",
                             "value": JobCreate.model_config["json_schema_extra"]["examples"][0]},
                    "upload": {"summary": "A finished resumable upload",
                               "value": JobCreate.model_config["json_schema_extra"]["examples"][1]},
                    "plane": {"summary": "One plane and channel of a ScanImage fast-z recording",
                              "value": JobCreate.model_config["json_schema_extra"]["examples"][2]},
                    "url": {"summary": "A movie in an object store (fsspec URL)",
                            "value": JobCreate.model_config["json_schema_extra"]["examples"][3]},
                },
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The movie (small files; use /v1/uploads for big "
                                           "ones). A folder (TIFF series, Zarr store) as a .zip.",
                        },
                        "model": {
                            "type": "string",
                            "description": "Installed model to use; default: the service's.",
                        },
                        "params": {
                            "type": "string",
                            "description": "JobParams as a JSON string.",
                            "example": '{"fps": 30, "motion_correction": false}',
                        },
                        "source": {
                            "type": "string",
                            "description": "How to read the movie, as a JSON string: `dataset`, "
                                           "`channel`, `plane` (as in a JSON job's `source`).",
                            "example": '{"plane": 1, "channel": 0}',
                        },
                    },
                }
            },
        },
    }
}  # fmt: skip


def _invalid(exc: ValidationError, where: str) -> RequestValidationError:
    errors = [{**e, "loc": (where, *e["loc"])} for e in exc.errors(include_url=False)]
    return RequestValidationError(errors)


async def _read_json(request: Request) -> tuple[JobCreate, bytes]:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise BadUploadError("the JSON body is too long; upload movies to /v1/uploads")
    try:
        return JobCreate.model_validate_json(bytes(body)), bytes(body)
    except ValidationError as exc:
        raise _invalid(exc, "body") from exc


def _options_field(text: str | None) -> dict[str, Any]:
    try:
        options = MovieOptions.model_validate_json(text) if text else MovieOptions()
    except ValidationError as exc:
        raise _invalid(exc, "source") from exc
    return options.model_dump(exclude_none=True)


def _params_field(text: str | None) -> JobParams:
    try:
        return JobParams.model_validate_json(text) if text else JobParams()
    except ValidationError as exc:
        raise _invalid(exc, "params") from exc


def _retry_after(job: Job, response: Response) -> None:
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        eta = JobRead.from_job(job).progress.eta_s
        response.headers["Retry-After"] = str(int(min(max((eta or 20) / 10, 1), 30)))


def _create(store: JobStore, job_id: str, model: str, source: ResolvedSource, params: JobParams,
            webhook: str | None, facts: Any, owner: str) -> Job:  # fmt: skip
    options = dict(source.options)
    if params.fps is not None:
        options["fps"] = params.fps
    return store.create(
        job_id, model=model, input_name=source.name, input_path=str(source.path),
        input_bytes=source.size, input_sha256=source.sha256, movie_shape=list(facts.shape),
        movie_dtype=facts.dtype, movie_fps=facts.fps, movie_layout=facts.layout,
        source=source.record,
        input_options=options, request=params.model_dump(mode="json"),
        params=engine_overrides(params), webhook_url=webhook, owner=owner,
    )  # fmt: skip


async def _from_multipart(request: Request, settings: Any, job_id: str) -> tuple[
        ResolvedSource, JobParams, Path]:  # fmt: skip
    folder = settings.uploads_dir / job_id
    folder.mkdir(parents=True)
    try:
        form = await receive_multipart(
            request, dest_dir=folder, max_bytes=settings.max_upload_bytes, file_fields={"file"}
        )
        upload = form.files.get("file")
        if upload is None:
            raise BadUploadError("no movie in the form field 'file'")
        params = _params_field(form.fields.get("params"))
        options = _options_field(form.fields.get("source"))
        if form.fields.get("model"):
            params = params.model_copy(update={"model": form.fields["model"]})
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    source = ResolvedSource(path=upload.path, name=upload.filename, size=upload.size,
                            sha256=upload.sha256, record={"kind": "multipart", **options},
                            options=options)  # fmt: skip
    return source, params, folder


@router.post(
    "",
    status_code=202,
    response_model=JobRead,
    summary="Queue a movie for processing (JSON: upload id or shared path; or multipart upload)",
    openapi_extra=UPLOAD_BODY,
    responses={200: {"model": JobRead, "description": "Replayed: the job made earlier with the "
                     "same Idempotency-Key"},
               **problem_responses(400, 403, 404, 409, 413, 415, 422, 503)},
)
async def submit_job(
    request: Request, response: Response, settings: SettingsDep, store: StoreDep,
    celery: CeleryDep, client: RedisDep, prefix: PrefixDep, user: CurrentUser,
    idempotency_key: Annotated[str | None, Header(
        description="Any unique string; a retried POST with the same key returns the same job.",
        examples=["rig3-2026-11-20-mouse12-plane1"])] = None,
) -> JobRead:  # fmt: skip
    job_id = store.new_id()
    is_json = request.headers.get("content-type", "").split(";")[0].strip() == "application/json"
    body = b""
    if is_json:
        create, body = await _read_json(request)
    reservation = None
    if idempotency_key is not None:
        reservation = await run_in_threadpool(
            idempotency.reserve, client, prefix, idempotency_key, job_id=job_id,
            fingerprint=idempotency.fingerprint(body) if body else "",
            owner=user.name)  # fmt: skip
        if reservation.replay:
            response.status_code = 200
            response.headers["Location"] = f"/v1/jobs/{reservation.job_id}"
            return JobRead.from_job(await run_in_threadpool(store.get, reservation.job_id))
    folder: Path | None = None
    uploads = UploadStore(client, prefix=prefix)
    try:
        await run_in_threadpool(_check_limits, store, uploads, settings, user, request, is_json)
        if is_json and create.source.upload_id is not None:
            await run_in_threadpool(owned_upload, uploads, create.source.upload_id, user)
        if is_json:
            if create.webhook_url is not None and settings.webhook_secret is None:
                raise WebhooksDisabledError(
                    "this service has no CAIMX_WEBHOOK_SECRET, so it cannot sign webhooks; "
                    "leave webhook_url out"
                )
            source = await run_in_threadpool(lambda: resolve_source(
                create.source, roots=settings.allowed_roots, uploads=uploads,
                remote_prefixes=settings.remote_allowed_prefixes,
                remote_options=settings.remote_options))  # fmt: skip
            params, webhook = create.params, create.webhook_url
        else:
            source, params, folder = await _from_multipart(request, settings, job_id)
            webhook = None
        model = await run_in_threadpool(choose_model, params.model or settings.default_model,
                                        settings.models_dir)  # fmt: skip
        source = await run_in_threadpool(unpack_upload, source,
                                         max_bytes=settings.max_upload_bytes)  # fmt: skip
        options = {**source.options, "fps": params.fps}
        if source.record.get("kind") == "url":
            options["storage_options"] = storage_options(str(source.path), settings.remote_options)
        facts = await run_in_threadpool(lambda: inspect_movie(source.path, **options))
        check_resampling(params, facts, model)  # no I/O: the card came with the model
        job = await run_in_threadpool(_create, store, job_id, model.name, source, params,
                                      str(webhook) if webhook else None, facts,
                                      user.name)  # fmt: skip
        if source.record.get("kind") == "upload":
            await run_in_threadpool(uploads.add_job, source.record["upload_id"], job_id)
    except BaseException:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        if reservation is not None:
            idempotency.release(client, reservation)
        raise
    try:
        await run_in_threadpool(send, celery, TASK_PREPARE_JOB, job_id)
    except Exception as exc:
        log.exception("could not queue job %s", job_id)
        store.transition(job_id, JobState.FAILED, error="the job could not be queued")
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise QueueUnavailableError(f"the job queue did not accept the job ({exc})") from exc
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return JobRead.from_job(job)


def _check_limits(store: JobStore, uploads: UploadStore, settings: Any, user: Principal,
                  request: Request, is_json: bool) -> None:  # fmt: skip
    """429 when the user has too many active jobs, or the upload passes a daily or stored limit."""
    limits.check_active_jobs(store, settings, user)
    size = 0 if is_json else int(request.headers.get("content-length") or 0)
    limits.check_storage(store, uploads, settings, user, adding=size)
    if size:
        limits.reserve_upload_bytes(uploads.client, uploads.prefix, settings, user, size)


@router.get("", response_model=JobList, summary="Jobs, newest first, a page at a time",
            responses=problem_responses(400, 422))  # fmt: skip
def list_jobs(
    store: StoreDep, request: Request, response: Response, user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=500, description="Jobs per page.")] = 50,
    cursor: Annotated[str | None, Query(max_length=200,
                                        description="`next_cursor` of the last page.")] = None,
    state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    since: Annotated[datetime | None, Query(description="Only jobs created at or after this.",
                                            examples=["2026-11-20T00:00:00Z"])] = None,
) -> JobList:  # fmt: skip
    try:
        page = store.list_page(limit=limit, cursor=cursor, state=state,
                               since=since.timestamp() if since else None,
                               owner=None if user.admin else user.name)  # fmt: skip
    except ValueError as exc:
        raise BadUploadError(str(exc)) from exc
    if page.next_cursor:
        url = request.url.include_query_params(cursor=page.next_cursor)
        response.headers["Link"] = f'<{url}>; rel="next"'
    return JobList(jobs=[JobRead.from_job(j) for j in page.jobs], next_cursor=page.next_cursor)


@router.get(
    "/{job_id}",
    response_model=JobRead,
    summary="State and progress of a job (Retry-After while it runs)",
    responses=problem_responses(404),
)
async def get_job(job_id: str, store: StoreDep, request: Request, response: Response,
                  user: CurrentUser) -> JobRead:  # fmt: skip
    job = await read_owned_job(request, store, job_id, user)
    _retry_after(job, response)
    return JobRead.from_job(job)


def cancel(job_id: str, store: StoreDep, settings: SettingsDep, celery: CeleryDep,
           user: CurrentUser) -> JobRead:  # fmt: skip
    """Mark the job canceled; workers stop at their next batch and skip queued chunks."""
    owned_job(store, job_id, user)
    job = store.transition(job_id, JobState.CANCELED, finished_at=time.time())
    shutil.rmtree(settings.results_dir / job_id, ignore_errors=True)  # the worker does it too
    if job.webhook_url:
        try:
            send(celery, TASK_WEBHOOK, job_id)
        except Exception:
            log.exception("could not queue the webhook of job %s", job_id)
    return JobRead.from_job(job)


_CANCEL = {"response_model": JobRead, "responses": problem_responses(404, 409)}


@router.post("/{job_id}:cancel", summary="Cancel a queued or running job", **_CANCEL)
def cancel_job_colon(job_id: str, store: StoreDep, settings: SettingsDep,
                     celery: CeleryDep, user: CurrentUser) -> JobRead:  # fmt: skip
    """Queued chunks are skipped, running ones stop at their next batch; partial results go."""
    return cancel(job_id, store, settings, celery, user)


@router.post("/{job_id}/cancel", summary="Cancel a queued or running job (same as :cancel)",
             **_CANCEL)  # fmt: skip
def cancel_job(job_id: str, store: StoreDep, settings: SettingsDep, celery: CeleryDep,
               user: CurrentUser) -> JobRead:  # fmt: skip
    return cancel(job_id, store, settings, celery, user)


@router.delete("/{job_id}", summary="Cancel a queued or running job (same as :cancel)", **_CANCEL)
def delete_job(job_id: str, store: StoreDep, settings: SettingsDep, celery: CeleryDep,
               user: CurrentUser) -> JobRead:  # fmt: skip
    return cancel(job_id, store, settings, celery, user)


def finished_result(store: JobStore, job_id: str, user: Principal) -> Job:
    """The job if its result can be read; else 404 (not the user's), 409 (not ready) or 410."""
    job = owned_job(store, job_id, user)
    if job.expired_at:
        raise ResultExpiredError(f"the result of job {job_id} was removed after the retention "
                                 "period", state=str(job.state))  # fmt: skip
    if job.state is not JobState.SUCCEEDED or not job.result_path:
        detail = f"job {job_id} is {job.state}"
        if job.error:
            detail += f": {job.error}"
        raise ResultNotReadyError(detail, state=str(job.state))
    return job


@router.get(
    "/{job_id}/result",
    response_model=ResultRead,
    summary="Where the result of a finished job is, and how to open it",
    responses=problem_responses(404, 409, 410),
)
def get_result(job_id: str, store: StoreDep, request: Request, user: CurrentUser) -> ResultRead:
    job = finished_result(store, job_id, user)
    url = str(request.url_for("zarr_key", job_id=job_id, key="")).rstrip("/")
    snippet = (
        "import zarr\n"
        f'result = zarr.open_group("{job.result_path}", mode="r")\n'
        f'# over HTTP: zarr.open_group("{url}", mode="r")\n'
        'footprints = result["footprints"][:]  # (K, H, W) float32\n'
        'traces = result["traces"][:]  # (K, T) float32\n'
        "print(dict(result.attrs))"
    )
    return ResultRead(job_id=job_id, path=job.result_path, python=snippet, summary=job.summary,
                      url=url)  # fmt: skip
