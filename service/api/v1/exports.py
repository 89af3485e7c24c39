"""``/v1/jobs/{id}/export/{format}`` and ``/v1/jobs/{id}/preview``: a finished result, re-shaped.

Exports are built on first request and cached next to the result (``results/<id>/exports/``);
later requests are served from the cache.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from caimx.jobs import JobState, JobStore
from service.auth import CurrentUser, Principal, owned_job
from service.deps import StoreDep
from service.errors import ResultNotReadyError, problem_responses

router = APIRouter(prefix="/jobs", tags=["results"])


class ExportFormat(StrEnum):
    NWB = "nwb"
    SUITE2P = "suite2p"
    TIFF = "tiff"


MEDIA_TYPES = {ExportFormat.NWB: "application/x-nwb"}
SUFFIXES = {ExportFormat.NWB: ".nwb", ExportFormat.SUITE2P: "-suite2p.zip",
            ExportFormat.TIFF: "-tiff.zip"}  # fmt: skip


def finished_result(store: JobStore, job_id: str, user: Principal) -> tuple[Path, str]:
    """The result group of a succeeded job and its input file name; 404 or 409 otherwise."""
    job = owned_job(store, job_id, user)
    if job.state is not JobState.SUCCEEDED or not job.result_path:
        detail = f"job {job_id} is {job.state}"
        if job.error:
            detail += f": {job.error}"
        raise ResultNotReadyError(detail, state=str(job.state))
    return Path(job.result_path), job.input_name


@router.get(
    "/{job_id}/export/{format}",
    response_class=FileResponse,
    summary="The result as NWB (one file), or a Suite2p folder or TIFF + CSV (zip)",
    responses={
        200: {"content": {"application/x-nwb": {}, "application/zip": {}},
              "description": "The export file."},
        **problem_responses(404, 409, 422),
    },
)  # fmt: skip
async def export_job(
    job_id: str,
    format: ExportFormat,
    store: StoreDep,
    user: CurrentUser,
    fs: float | None = Query(None, gt=0, description="Frames per second; default: the movie's."),
) -> FileResponse:
    from model.exports import build_download

    result, input_name = finished_result(store, job_id, user)
    path = await run_in_threadpool(build_download, result, str(format), fs=fs)
    stem = Path(input_name).stem or job_id
    return FileResponse(path, media_type=MEDIA_TYPES.get(format, "application/zip"),
                        filename=f"{stem}{SUFFIXES[format]}")  # fmt: skip


@router.get(
    "/{job_id}/preview",
    summary="Mean image (PNG, base64), neuron contours and traces, sized for a browser",
    responses=problem_responses(404, 409),
)
async def preview_job(
    job_id: str,
    store: StoreDep,
    user: CurrentUser,
    max_side: int = Query(512, ge=32, le=4096, description="Longest side of the PNG."),
    max_points: int = Query(2000, ge=10, le=100_000, description="Points per trace at most."),
) -> dict[str, Any]:
    from model.exports.preview import cached_preview

    result, _ = finished_result(store, job_id, user)
    preview = await run_in_threadpool(cached_preview, result, max_side=max_side,
                                      max_points=max_points)  # fmt: skip
    return {"job_id": job_id, **preview}
