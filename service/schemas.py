"""Pydantic models of what the API receives and returns (v1)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_serializer

from caimx.job_params import JobParams
from caimx.jobs import Job, JobState
from service.sources import JobSource


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


class MovieRead(BaseModel):
    name: str = Field(description="File name as uploaded.")
    bytes: int = Field(description="Size of the upload in bytes.")
    sha256: str | None = Field(
        description="SHA-256 of the file (for a referenced movie: once the worker has read it)."
    )
    shape: list[int] | None = Field(description="Detected (frames, height, width).")
    dtype: str | None = Field(description="Detected pixel type, e.g. uint16.")
    fps: float | None = Field(
        default=None, description="Frame rate the file records, else the job's `fps` parameter."
    )
    planes: int = Field(default=1, description="Z-planes in the file (ScanImage fast-z volumes, "
                        "hyperstacks); one is processed: `plane`.")  # fmt: skip
    plane: int = Field(default=0, description="The plane processed (from 0; `source.plane`).")
    channels: int = Field(default=1, description="Channels in the file.")
    channel: int = Field(default=0, description="The channel processed (from 0; `source.channel`).")


class ProgressRead(BaseModel):
    chunks_done: int
    chunks_total: int = Field(description="0 until the worker has planned the job.")
    fraction: float | None = Field(description="chunks_done / chunks_total, once known.")
    frames_per_s: float | None = Field(
        default=None, description="Movie frames processed per second (chunks so far, or overall)."
    )
    eta_s: float | None = Field(default=None, description="Seconds until the last chunk, roughly.")


def progress_of(job: Job, now: float | None = None) -> ProgressRead:
    total, done = job.chunks_total, job.chunks_done
    fraction = round(done / total, 4) if total else None
    frames = job.movie_shape[0] if job.movie_shape else 0
    rate = eta = None
    if job.state is JobState.SUCCEEDED and job.started_at and job.finished_at and frames:
        rate = frames / max(job.finished_at - job.started_at, 1e-6)
    elif job.state is JobState.RUNNING and job.chunks_started_at and fraction:
        elapsed = max((now or time.time()) - job.chunks_started_at, 1e-6)
        rate = fraction * frames / elapsed
        eta = elapsed * (1 - fraction) / fraction
    return ProgressRead(
        chunks_done=done, chunks_total=total, fraction=fraction,
        frames_per_s=round(rate, 2) if rate is not None else None,
        eta_s=round(eta, 1) if eta is not None else None,
    )  # fmt: skip


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
    source: dict[str, Any] = Field(default_factory=dict,
                                   description="`multipart`, `upload` (upload_id), `path` or "
                                               "`url`, with the reading options.")  # fmt: skip
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Processing parameters as requested.")
    webhook_url: str | None = None
    links: dict[str, str]

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "5f0c6a2e9b0d4c8f8e1a7b3c2d1e0f9a", "state": "running", "model": "deepcaimx-mini",
        "movie": {"name": "mouse12_plane1.tif", "bytes": 2147483648, "sha256": "e3b0c442...",
                  "shape": [4096, 512, 512], "dtype": "uint16", "fps": 30.0, "planes": 1,
                  "plane": 0, "channels": 1, "channel": 0},
        "progress": {"chunks_done": 12, "chunks_total": 52, "fraction": 0.2308,
                     "frames_per_s": 41.5, "eta_s": 88.0},
        "error": None, "attempts": 1, "created_at": "2026-11-20T10:00:00Z",
        "updated_at": "2026-11-20T10:01:10Z", "updated_by": "worker:gpu1@host",
        "started_at": "2026-11-20T10:00:02Z", "finished_at": None, "timings": {},
        "source": {"kind": "path", "path": "rig3/2026-11-20/mouse12_plane1.tif"},
        "params": {"motion_correction": True, "outputs": ["footprints", "traces", "images"]},
        "webhook_url": None,
        "links": {"self": "/v1/jobs/5f0c6a2e9b0d4c8f8e1a7b3c2d1e0f9a"}}]})  # fmt: skip

    @classmethod
    def from_job(cls, job: Job) -> JobRead:
        base = f"/v1/jobs/{job.id}"
        return cls(
            id=job.id,
            state=job.state,
            model=job.model,
            movie=MovieRead(
                name=job.input_name,
                bytes=job.input_bytes,
                sha256=job.input_sha256 or None,
                shape=list(job.movie_shape) if job.movie_shape else None,
                dtype=job.movie_dtype,
                fps=job.movie_fps,
                **{key: int(value) for key, value in job.movie_layout.items()
                   if key in ("planes", "plane", "channels", "channel")},
            ),
            progress=progress_of(job),
            error=job.error,
            attempts=job.attempts,
            created_at=_time(job.created_at),
            updated_at=_time(job.updated_at),
            updated_by=job.updated_by,
            started_at=_time(job.started_at),
            finished_at=_time(job.finished_at),
            timings=job.timings,
            source=job.source,
            params=job.request,
            webhook_url=job.webhook_url,
            links={"self": base, "result": f"{base}/result", "zarr": f"{base}/zarr",
                   "zip": f"{base}/result.zip", "cancel": f"{base}:cancel"},
        )


class JobList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "jobs": [JobRead.model_config["json_schema_extra"]["examples"][0]],
        "next_cursor": "1795000000.123456~5f0c6a2e9b0d4c8f8e1a7b3c2d1e0f9a"}]})
    jobs: list[JobRead]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; absent on the last page."
    )

    @model_serializer(mode="wrap")
    def _drop_empty_cursor(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("next_cursor") is None:
            data.pop("next_cursor", None)
        return data


class JobCreate(BaseModel):
    """A job on a movie that is already on the server: a finished upload or a shared path."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"source": {"path": "rig3/2026-11-20/mouse12_plane1.tif"},
         "params": {"fps": 30.0, "pixel_size_um": 1.2, "motion_correction": True}},
        {"source": {"upload_id": "8d2f0c5e4b7a4d1e9c3b2a1f0e9d8c7b"},
         "params": {"model": "deepcaimx-mini", "tile": 32, "tile_overlap": 8,
                    "outputs": ["footprints", "traces", "images", "denoised"]},
         "webhook_url": "https://lab.example.org/hooks/caimx"},
        {"source": {"path": "rig2/2026-11-21/fastz_00001.tif", "plane": 2, "channel": 0},
         "params": {"fps": 7.5}},
        {"source": {"url": "s3://lab-rigs/rig3/2026-11-20/mouse12_plane1.tif"},
         "params": {"fps": 30.0}}]})  # fmt: skip

    source: JobSource
    params: JobParams = Field(default_factory=JobParams)
    webhook_url: HttpUrl | None = Field(
        default=None, description="Called (POST, HMAC-SHA256 signed) when the job finishes."
    )


class ResultRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "5f0c6a2e9b0d4c8f8e1a7b3c2d1e0f9a", "format": "zarr-v3-group",
        "path": "/srv/caimx/results/5f0c6a2e9b0d4c8f8e1a7b3c2d1e0f9a/result.zarr",
        "url": "http://caimx:8000/v1/jobs/5f0c6a2e9b0d4c8f8e1a7b3c2d1e0f9a/zarr",
        "python": "import zarr\nresult = zarr.open_group(...)",
        "summary": {"n_neurons": 212, "movie_shape": [4096, 512, 512], "n_chunks": 52}}]})
    job_id: str
    format: str = Field(
        default="zarr-v3-group", description="Layout documented in docs/results.md."
    )
    path: str = Field(description="Where the result group lives on the shared storage.")
    url: str | None = Field(
        default=None, description="The result as a read-only Zarr v3 store over HTTP."
    )
    python: str = Field(description="How to open the result from Python.")
    summary: dict[str, Any] = Field(description="Facts about the result (neurons found, ...).")


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok",
                                                               "version": "0.1.0"}]})
    status: str = "ok"
    version: str


class WorkerRead(BaseModel):
    hostname: str
    host: str | None = None
    pid: int | None = None
    seen_at: float | None = None


class Readiness(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "ready", "redis": "ok", "workers": [{"hostname": "gpu1@node7", "host": "node7",
                                                       "pid": 4242, "seen_at": 1795000000.0}]}]})
    status: str = "ready"
    redis: str = "ok"
    workers: list[WorkerRead]
