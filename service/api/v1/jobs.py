"""``/v1/jobs``: submit a movie, follow its job, find its result."""

from __future__ import annotations

import logging
import shutil
import time

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from caimx.jobs import JobState
from caimx.queue import QUEUE, TASK_PROCESS_JOB
from service.deps import CeleryDep, SettingsDep, StoreDep
from service.errors import (
    BadUploadError,
    QueueUnavailableError,
    ResultNotReadyError,
    problem_responses,
)
from service.schemas import JobList, JobRead, ResultRead
from service.submission import choose_model, inspect_movie
from service.uploads import receive_multipart

router = APIRouter(prefix="/jobs", tags=["jobs"])
log = logging.getLogger(__name__)

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The movie: multi-page TIFF or .npy, (frames, y, x).",
                        },
                        "model": {
                            "type": "string",
                            "description": "Installed model to use; default: the service's.",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=JobRead,
    summary="Upload a movie and queue it for processing",
    openapi_extra=UPLOAD_BODY,
    responses=problem_responses(400, 413, 415, 422, 503),
)
async def submit_job(
    request: Request, response: Response, settings: SettingsDep, store: StoreDep, celery: CeleryDep
) -> JobRead:
    job_id = store.new_id()
    folder = settings.uploads_dir / job_id
    folder.mkdir(parents=True)
    try:
        form = await receive_multipart(
            request, dest_dir=folder, max_bytes=settings.max_upload_bytes, file_fields={"file"}
        )
        upload = form.files.get("file")
        if upload is None:
            raise BadUploadError("no movie in the form field 'file'")
        model = await run_in_threadpool(
            choose_model, form.fields.get("model") or settings.default_model, settings.models_dir
        )
        facts = await run_in_threadpool(inspect_movie, upload.path)
        job = await run_in_threadpool(
            lambda: store.create(
                job_id,
                model=model.name,
                input_name=upload.filename,
                input_path=str(upload.path),
                input_bytes=upload.size,
                input_sha256=upload.sha256,
                movie_shape=list(facts.shape),
                movie_dtype=facts.dtype,
                movie_fps=facts.fps,
            )
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        await run_in_threadpool(
            lambda: celery.send_task(TASK_PROCESS_JOB, args=[job_id], queue=QUEUE, retry=False)
        )
    except Exception as exc:
        log.exception("could not queue job %s", job_id)
        store.transition(job_id, JobState.FAILED, error="the job could not be queued")
        shutil.rmtree(folder, ignore_errors=True)
        raise QueueUnavailableError(f"the job queue did not accept the job ({exc})") from exc
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return JobRead.from_job(job)


@router.get("", response_model=JobList, summary="Recent jobs, newest first")
def list_jobs(
    store: StoreDep, limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)
) -> JobList:
    jobs = []
    for job_id in store.list_ids(limit=limit, offset=offset):
        if store.exists(job_id):
            jobs.append(JobRead.from_job(store.get(job_id)))
    return JobList(jobs=jobs)


@router.get(
    "/{job_id}",
    response_model=JobRead,
    summary="State and progress of a job",
    responses=problem_responses(404),
)
def get_job(job_id: str, store: StoreDep) -> JobRead:
    return JobRead.from_job(store.get(job_id))


@router.post(
    "/{job_id}/cancel",
    response_model=JobRead,
    summary="Cancel a queued or running job",
    responses=problem_responses(404, 409),
)
def cancel_job(job_id: str, store: StoreDep) -> JobRead:
    """A queued job is never started; a running one stops before its next chunk."""
    return JobRead.from_job(store.transition(job_id, JobState.CANCELED, finished_at=time.time()))


@router.get(
    "/{job_id}/result",
    response_model=ResultRead,
    summary="Where the result of a finished job is, and how to open it",
    responses=problem_responses(404, 409),
)
def get_result(job_id: str, store: StoreDep) -> ResultRead:
    job = store.get(job_id)
    if job.state is not JobState.SUCCEEDED or not job.result_path:
        detail = f"job {job_id} is {job.state}"
        if job.error:
            detail += f": {job.error}"
        raise ResultNotReadyError(detail, state=str(job.state))
    snippet = (
        "import zarr\n"
        f'result = zarr.open_group("{job.result_path}", mode="r")\n'
        'footprints = result["footprints"][:]  # (K, H, W) float32\n'
        'traces = result["traces"][:]  # (K, T) float32\n'
        "print(dict(result.attrs))"
    )
    return ResultRead(job_id=job_id, path=job.result_path, python=snippet, summary=job.summary)
