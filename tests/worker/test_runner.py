"""The job runner without Celery: parameters, failure reasons, no-ops on finished jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from caimx.jobs import JobState, JobStore
from caimx.queue import celery_config
from caimx.settings import Settings
from worker.runner import failure_reason, inference_params, run_job


def test_settings_become_inference_parameters(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, tile_size=48, tile_overlap=6, window_overlap=24,
                        batch_size=4, read_ahead=3, candidate_threads=2,
                        batches_in_flight=2)  # fmt: skip
    params = inference_params(settings, {"plan": {"tile_overlap": 10}, "write_denoised": True})
    assert (params.plan.tile, params.plan.tile_overlap, params.plan.window_overlap) == (48, 10, 24)
    assert params.batch_size == 4 and params.write_denoised
    assert (params.read_ahead, params.candidate_threads, params.batches_in_flight) == (3, 2, 2)
    with pytest.raises(ValueError, match="unknown"):
        inference_params(settings, {"no_such_stage": {}})


def test_celery_is_configured_for_redelivery_of_short_chunk_tasks(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, redis_url="redis://x", task_time_limit_s=7200,
                        visibility_timeout_s=900)  # fmt: skip
    conf = celery_config(settings)
    assert conf["task_acks_late"] and conf["worker_prefetch_multiplier"] == 1
    assert conf["task_reject_on_worker_lost"]
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["broker_transport_options"]["visibility_timeout"] == 900
    assert conf["task_time_limit"] == 7200


def test_unknown_model_fails_the_job(job_store: JobStore, movie_tiff: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    job_id = job_store.new_id()
    job_store.create(job_id, model="no-such-model", input_name="m.tif", input_path=str(movie_tiff))
    assert run_job(job_id, settings=settings, store=job_store) is JobState.FAILED
    job = job_store.get(job_id)
    assert "no model named 'no-such-model'" in job.error and job.finished_at
    assert job.attempts == 1 and "total_s" in job.timings
    # A finished job delivered again is left alone.
    assert run_job(job_id, settings=settings, store=job_store) is JobState.FAILED
    assert job_store.get(job_id).attempts == 1


def test_failure_reasons_are_short_and_plain() -> None:
    assert failure_reason(ValueError("the movie is dark")) == "the movie is dark"
    assert "internal error (RuntimeError: x" in failure_reason(RuntimeError("x" * 2000))
    assert len(failure_reason(RuntimeError("x" * 2000))) == 500
    assert "out of memory" in failure_reason(MemoryError())
    assert "time limit" in failure_reason(SoftTimeLimitExceeded())


def test_a_whole_job_on_a_gpu_takes_the_gpu_choices_unless_set(
    job_store: JobStore, movie_tiff: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """One task running a whole job on a worker whose model runs on a GPU: batch size and
    threads the deployment left unset are the GPU's (the GPU stood in for by the detector's
    answer: this host has none); a job's own batch size and a set CAIMX_* value stay."""
    import model.runtimes
    from worker import model_cache

    monkeypatch.setattr(model.runtimes, "accelerator", lambda runtime: "GPU")
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.setattr(model_cache, "_cache", {})  # loaded for the "GPU", forgotten after
    settings = Settings(data_dir=tmp_path, candidate_threads=2)
    job_id = job_store.new_id()
    job_store.create(job_id, model="caimx-mini", input_name="m.tif", input_path=str(movie_tiff),
                     params={"motion": {"enabled": False}})
    assert run_job(job_id, settings=settings, store=job_store) is JobState.SUCCEEDED
    params = job_store.get(job_id).params
    assert (params["batch_size"], params["read_ahead"], params["candidate_threads"]) == (
        128, 12, 2)
    job_id = job_store.new_id()
    job_store.create(job_id, model="caimx-mini", input_name="m.tif", input_path=str(movie_tiff),
                     params={"motion": {"enabled": False}, "batch_size": 3})
    assert run_job(job_id, settings=settings, store=job_store) is JobState.SUCCEEDED
    assert job_store.get(job_id).params["batch_size"] == 3
