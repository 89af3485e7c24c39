"""Pydantic models of what the API receives and returns (v1)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from caimx.jobs import Job, JobState


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


class MovieRead(BaseModel):
    name: str = Field(description="File name as uploaded.")
    bytes: int = Field(description="Size of the upload in bytes.")
    sha256: str = Field(description="SHA-256 of the uploaded bytes.")
    shape: list[int] | None = Field(description="Detected (frames, height, width).")
    dtype: str | None = Field(description="Detected pixel type, e.g. uint16.")
    fps: float | None = Field(default=None, description="Frame rate if the file records it.")


class ProgressRead(BaseModel):
    chunks_done: int
    chunks_total: int = Field(description="0 until the worker has planned the job.")
    fraction: float | None = Field(description="chunks_done / chunks_total, once known.")


class JobRead(BaseModel):
    id: str
    state: JobState
    model: str = Field(description="Name of the model that processes the movie.")
    movie: MovieRead
    progress: ProgressRead
    error: str | None = Field(description="Why the job failed, in plain words.")
    attempts: int = Field(description="How many times a worker has started this job.")
    created_at: datetime
    updated_at: datetime
    updated_by: str = Field(description="Which process wrote the last change.")
    started_at: datetime | None
    finished_at: datetime | None
    timings: dict[str, float] = Field(description="Seconds spent in each phase.")
    links: dict[str, str]

    @classmethod
    def from_job(cls, job: Job) -> JobRead:
        total = job.chunks_total
        return cls(
            id=job.id,
            state=job.state,
            model=job.model,
            movie=MovieRead(
                name=job.input_name,
                bytes=job.input_bytes,
                sha256=job.input_sha256,
                shape=list(job.movie_shape) if job.movie_shape else None,
                dtype=job.movie_dtype,
                fps=job.movie_fps,
            ),
            progress=ProgressRead(
                chunks_done=job.chunks_done,
                chunks_total=total,
                fraction=round(job.chunks_done / total, 4) if total else None,
            ),
            error=job.error,
            attempts=job.attempts,
            created_at=_time(job.created_at),
            updated_at=_time(job.updated_at),
            updated_by=job.updated_by,
            started_at=_time(job.started_at),
            finished_at=_time(job.finished_at),
            timings=job.timings,
            links={"self": f"/v1/jobs/{job.id}", "result": f"/v1/jobs/{job.id}/result"},
        )


class JobList(BaseModel):
    jobs: list[JobRead]


class ResultRead(BaseModel):
    job_id: str
    format: str = Field(
        default="zarr-v3-group", description="Layout documented in docs/results.md."
    )
    path: str = Field(description="Where the result group lives on the shared storage.")
    python: str = Field(description="How to open the result from Python.")
    summary: dict[str, Any] = Field(description="Facts about the result (neurons found, ...).")


class Health(BaseModel):
    status: str = "ok"
    version: str


class WorkerRead(BaseModel):
    hostname: str
    host: str | None = None
    pid: int | None = None
    seen_at: float | None = None


class Readiness(BaseModel):
    status: str = "ready"
    redis: str = "ok"
    workers: list[WorkerRead]
