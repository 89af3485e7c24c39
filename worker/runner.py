"""Running one job: the job-state mechanics around ``model.inference.process_movie``.

Kept apart from Celery so that it reads as plain code: mark running, open the movie, load the
model (cached), process with progress written to the job store, and record success or a short
failure reason. Exceptions stop here; a bad movie fails only its own job.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import shutil
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from caimx.jobs import InvalidTransitionError, JobState, JobStore
from caimx.remote import check_url, storage_options
from caimx.settings import Settings
from worker import model_cache

log = logging.getLogger(__name__)
RESULT_NAME = "result.zarr"


class JobCanceled(Exception):
    """The job was canceled while it ran."""


def result_path(settings: Settings, job_id: str) -> Path:
    return settings.results_dir / job_id / RESULT_NAME


def inference_params(settings: Settings, overrides: dict[str, Any] | None = None):
    """Engine parameters from the deployment settings, then the job's own overrides."""
    from model.inference.params import InferenceParams

    plan: dict[str, Any] = {
        "tile_overlap": settings.tile_overlap,
        "window_overlap": settings.window_overlap,
    }
    if settings.tile_size is not None:
        plan["tile"] = settings.tile_size
    if settings.tiles_per_chunk is not None:
        plan["tiles_per_chunk"] = settings.tiles_per_chunk
    data: dict[str, Any] = {"plan": plan, "batch_size": settings.batch_size,
                            "read_ahead": settings.read_ahead,
                            "candidate_threads": settings.candidate_threads,
                            "batches_in_flight": settings.batches_in_flight,
                            "deconvolve_processes": settings.deconvolve_processes}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return InferenceParams.from_dict(data)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"array{value.shape}"
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _damaged_movie(exc: BaseException) -> bool:
    """Errors of the decoders under the readers: bytes that are not what the header promised."""
    module = type(exc).__module__ or ""
    return (isinstance(exc, EOFError | zlib.error | struct.error)
            or module.split(".")[0] in ("tifffile", "imagecodecs", "h5py"))  # fmt: skip


def failure_reason(exc: BaseException) -> str:
    """One short line a scientist can act on."""
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, SoftTimeLimitExceeded):
        text = "the job took longer than the worker's time limit (CAIMX_TASK_TIME_LIMIT_S)"
    elif isinstance(exc, ValueError):  # includes model.io.MovieFormatError
        text = str(exc)
    elif isinstance(exc, FileNotFoundError):
        text = f"a file is missing on the worker: {exc.filename or exc}"
    elif _damaged_movie(exc):
        text = f"the movie could not be read: the file is damaged or truncated ({exc})"
    elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        text = ("no space left on the results storage while writing the result; nothing was "
                "kept. Free space (or ask an admin) and submit the movie again")
    elif isinstance(exc, MemoryError):
        text = "the worker ran out of memory; try a smaller movie or fewer patches per batch"
    else:
        text = f"internal error ({type(exc).__name__}: {exc}); see the worker log"
    return text if len(text) <= 500 else text[:497] + "..."


def open_job_movie(input_path: str, options: dict[str, Any] | None, settings: Settings):
    """The job's movie: a local file, or a URL (checked again against the allowed prefixes,
    with the protocol's configured options; credentials come from the environment)."""
    from model.io import open_movie
    from model.io.remote import is_url

    if is_url(input_path):
        url = check_url(input_path, settings.remote_allowed_prefixes)
        return open_movie(url, storage_options=storage_options(url, settings.remote_options),
                          **(options or {}))  # fmt: skip
    return open_movie(input_path, **(options or {}))


def run_job(job_id: str, *, settings: Settings, store: JobStore) -> JobState:
    """Process job ``job_id`` to a final state and return it."""
    job = store.get(job_id)
    if job.state.terminal:
        log.info("job %s is already %s; nothing to do", job_id, job.state)
        return job.state
    started = time.time()
    try:
        store.transition(
            job_id, JobState.RUNNING, started_at=started, attempts=job.attempts + 1,
            chunks_done=0, error=None,
        )  # fmt: skip
    except InvalidTransitionError:
        return store.state(job_id)
    try:
        timings, summary, output = _process(job_id, job.model, job.input_path, job.params,
                                            settings=settings, store=store,
                                            options=job.input_options,
                                            input_sha256=job.input_sha256 or None)  # fmt: skip
    except JobCanceled:
        log.info("job %s canceled", job_id)
        shutil.rmtree(result_path(settings, job_id).parent, ignore_errors=True)
        return store.state(job_id)
    except Exception as exc:
        log.exception("job %s failed", job_id)
        shutil.rmtree(result_path(settings, job_id).parent, ignore_errors=True)
        return _finish(store, job_id, JobState.FAILED, started, error=failure_reason(exc))
    return _finish(store, job_id, JobState.SUCCEEDED, started, result_path=str(output),
                   summary=summary, timings=timings)  # fmt: skip


def _finish(
    store: JobStore, job_id: str, state: JobState, started: float, **values: Any
) -> JobState:
    values.setdefault("timings", {})
    values["timings"] = {**values["timings"], "total_s": round(time.time() - started, 3)}
    try:
        return store.transition(job_id, state, finished_at=time.time(), **values).state
    except InvalidTransitionError as exc:  # canceled meanwhile
        return exc.current


def _process(
    job_id: str, model: str, input_path: str, overrides: dict[str, Any], *,
    settings: Settings, store: JobStore, options: dict[str, Any] | None = None,
    input_sha256: str | None = None,
) -> tuple[dict[str, float], dict[str, Any], Path]:  # fmt: skip
    """``input_sha256``: the file's digest when the service has it (an upload, hashed as it
    arrived), so that the engine does not read the movie once more for it."""
    from model.inference import InferenceCancelled, process_movie

    timings: dict[str, float] = {}
    params = inference_params(settings, overrides)
    store.update(job_id, params=params.to_dict())
    output = result_path(settings, job_id)
    if output.exists():  # a redelivered job starts from a clean folder
        shutil.rmtree(output)
    output.parent.mkdir(parents=True, exist_ok=True)

    def progress(done: int, total: int) -> None:
        store.set_progress(job_id, done, total)

    def should_cancel() -> bool:
        return store.state(job_id) is JobState.CANCELED

    try:
        with open_job_movie(input_path, options, settings) as movie:  # fails before TF loads
            cached = model_cache.get_predictor(model, settings)
            timings["load_model_s"] = round(cached.load_s, 3)
            # batch size and threads for a GPU, where neither deployment nor job set them
            tuned = {k: v for k, v in cached.tuned.items() if k not in (overrides or {})}
            if tuned:
                params = dataclasses.replace(params, **tuned)
                store.update(job_id, params=params.to_dict())
            start = time.perf_counter()
            summary = process_movie(movie, cached.predictor, output=output, params=params,
                                    progress=progress, should_cancel=should_cancel,
                                    input_sha256=input_sha256)  # fmt: skip
    except InferenceCancelled as exc:
        raise JobCanceled(job_id) from exc
    timings["inference_s"] = round(time.perf_counter() - start, 3)
    facts = _jsonable(summary) or {}
    for phase, seconds in (facts.pop("seconds", None) or {}).items():
        timings[f"{phase}_s"] = round(float(seconds), 3)
    facts.pop("decisions", None)  # per-candidate detail stays in the result group
    return timings, facts, output
