"""Several consecutive chunks in one GPU task (``Settings.chunks_per_task``).

Real Redis, the real SavedModel, a real movie on disk; the sender records what would go to the
broker, and the test plays the broker by running each message's task function.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from caimx.jobs import JobState, JobStore
from caimx.queue import TASK_FINALIZE_JOB, TASK_RUN_CHUNK
from caimx.settings import Settings
from model.inference.chunks import chunk_dir
from worker import pipeline

pytestmark = pytest.mark.slow


def _movie(path: Path, size: int = 40) -> Path:
    rng = np.random.default_rng(5)
    t, h, w = 120, size, size
    yy, xx = np.mgrid[:h, :w]
    movie = rng.poisson(200.0, (t, h, w)).astype(np.float64)
    for cy, cx in ((12, 12), (26, 28)):
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= 25
        movie += (rng.random(t) < 0.06)[:, None, None] * 400.0 * disk + 100.0 * disk
    np.save(path, np.clip(movie, 0, 65535).astype(np.uint16))
    return path


def _new_job(job_store: JobStore, folder: Path, size: int = 40) -> tuple[str, Path]:
    """A job on :func:`_movie` (motion correction off): ``(job id, movie path)``."""
    job_id = job_store.new_id()
    movie = _movie(folder / "m.npy", size)
    job_store.create(job_id, model="caimx-mini", input_name=movie.name, input_path=str(movie),
                     params={"motion": {"enabled": False}})
    return job_id, movie


def test_chunk_groups_count_each_chunk_resume_and_finalize_once(
    job_store: JobStore, settings: Settings, tmp_path: Path,
) -> None:  # fmt: skip
    settings = settings.model_copy(update={"data_dir": tmp_path, "tiles_per_chunk": 1,
                                           "chunks_per_task": 3, "read_ahead": 2,
                                           "candidate_threads": 2})
    job_id, _ = _new_job(job_store, tmp_path)
    sent: list[tuple] = []
    pipeline.prepare_job(job_id, settings=settings, store=job_store,
                         send=lambda *message: sent.append(message))
    job = job_store.get(job_id)
    assert job.state is JobState.RUNNING and job.chunks_total == 8  # 4 tiles x 2 windows
    groups = [message[2] for message in sent]
    assert [message[0] for message in sent] == [TASK_RUN_CHUNK] * 3
    in_order = [chunk_id for group in groups for chunk_id in group]
    assert [len(g) for g in groups] == [3, 3, 2] and in_order == sorted(in_order)

    def run(group: list[str]) -> list[tuple]:
        messages: list[tuple] = []
        pipeline.run_chunk(job_id, group, settings=settings, store=job_store,
                           send=lambda *message: messages.append(message))
        return messages

    work = pipeline.work_dir(settings, job_id)
    assert run(groups[0]) == [] and job_store.get(job_id).chunks_done == 3
    # the second group's first chunk was counted before its worker died: the task redelivered
    # computes the other two only
    assert run([groups[1][0]]) == []
    first = (chunk_dir(work, groups[1][0]) / "meta.json").stat().st_mtime_ns
    time.sleep(0.01)
    assert run(groups[1]) == [] and job_store.get(job_id).chunks_done == 6
    assert (chunk_dir(work, groups[1][0]) / "meta.json").stat().st_mtime_ns == first
    assert run(groups[2]) == [(TASK_FINALIZE_JOB, job_id)]  # after the job's last chunk only
    assert job_store.get(job_id).chunks_done == 8
    assert run(groups[2]) == [(TASK_FINALIZE_JOB, job_id)]  # redelivered: nothing recomputed

    pipeline.finalize_job(job_id, settings=settings, store=job_store, send=lambda *m: None)
    done = job_store.get(job_id)
    assert done.state is JobState.SUCCEEDED, done.error


def test_a_referenced_movie_is_hashed_after_its_chunks_are_queued_or_by_finalize(
    job_store: JobStore, settings: Settings, tmp_path: Path,
) -> None:  # fmt: skip
    settings = settings.model_copy(update={"data_dir": tmp_path, "tiles_per_chunk": 4})
    job_id, movie = _new_job(job_store, tmp_path)
    digest = hashlib.sha256(movie.read_bytes()).hexdigest()
    sent: list[tuple] = []

    def send(*message: object) -> None:  # the digest as the broker gets each chunk
        sent.append((*message, job_store.get(job_id).input_sha256))

    pipeline.prepare_job(job_id, settings=settings, store=job_store, send=send)
    assert sent and all(m[0] == TASK_RUN_CHUNK and not m[-1] for m in sent)
    assert job_store.get(job_id).input_sha256 == digest
    # finalize before prepare's digest is in: finalize makes it
    job_store.update(job_id, input_sha256="")
    for message in sent:
        pipeline.run_chunk(job_id, message[2], settings=settings, store=job_store,
                           send=lambda *m: None)
    pipeline.finalize_job(job_id, settings=settings, store=job_store, send=lambda *m: None)
    done = job_store.get(job_id)
    assert done.state is JobState.SUCCEEDED, done.error
    assert done.input_sha256 == digest
    result = zarr.open_group(Path(done.result_path), mode="r")
    assert result.attrs["input"]["sha256"] == digest


class _CountingPredictor:
    """The real predictor, counting the patches of each network call."""

    def __init__(self, predictor: object) -> None:
        self._predictor = predictor
        self.card, self.runtime = predictor.card, predictor.runtime
        self.calls: list[int] = []

    def predict(self, patches):
        self.calls.append(len(patches))
        return self._predictor.predict(patches)

    def start(self, patches, **options):
        self.calls.append(len(patches))
        return self._predictor.start(patches, **options)


def test_chunks_run_with_the_gpu_workers_batch_size(
    job_store: JobStore, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The plan is made by whichever worker prepares the job (its batch size, say a CPU's 5);
    the chunks run with the batch size of the worker that runs them (a GPU's, its model compiled
    for it): 7 here."""
    from worker import model_cache

    prepared_by = settings.model_copy(update={"data_dir": tmp_path, "tiles_per_chunk": 2,
                                              "batch_size": 5, "chunks_per_task": 8})
    run_by = prepared_by.model_copy(update={"batch_size": 7, "batches_in_flight": 2})
    job_id, _ = _new_job(job_store, tmp_path)
    sent: list[tuple] = []
    pipeline.prepare_job(job_id, settings=prepared_by, store=job_store,
                         send=lambda *message: sent.append(message))
    plan_batch = job_store.get(job_id).params["batch_size"]
    assert plan_batch == 5
    real = model_cache.get_predictor("caimx-mini", run_by)
    counting = _CountingPredictor(real.predictor)
    monkeypatch.setattr(model_cache, "get_predictor",
                        lambda name, s: model_cache.CachedModel(counting, 0.0))
    [(_, _, group)] = sent  # 2 tile groups x 2 windows, one task
    pipeline.run_chunk(job_id, group, settings=run_by, store=job_store, send=lambda *m: None)
    assert job_store.get(job_id).chunks_done == 4
    assert sum(counting.calls) == 8  # 4 tiles x 2 windows
    assert counting.calls == [7, 1], counting.calls


def test_a_gpu_worker_chooses_its_batch_size_and_threads_when_unset(
    job_store: JobStore, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A worker whose model runs on a GPU and whose deployment left batch size and threads
    unset runs its chunks with those of :func:`model.runtimes.accelerator_defaults` (its model
    loaded for that batch size); on a CPU (every other test) nothing changes. The GPU is stood
    in for by the detector's answer: this host has none."""
    import model.runtimes
    from worker import model_cache

    settings = settings.model_copy(update={"data_dir": tmp_path, "chunks_per_task": 8})
    assert "batch_size" not in settings.model_fields_set and settings.batch_size == 16
    job_id, _ = _new_job(job_store, tmp_path, size=72)  # 9 tiles x 2 windows: 18 patches
    sent: list[tuple] = []
    pipeline.prepare_job(job_id, settings=settings, store=job_store,
                         send=lambda *message: sent.append(message))
    monkeypatch.setattr(model.runtimes, "accelerator", lambda runtime: "GPU")
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    model_cache.clear()  # loaded again, for the GPU
    monkeypatch.setattr(model_cache, "_cache", {})  # and forgotten after this test
    calls: list[int] = []
    cached = model_cache.get_predictor("caimx-mini", settings)
    assert cached.tuned == {"batch_size": 128, "read_ahead": 4, "candidate_threads": 2}
    counting = _CountingPredictor(cached.predictor)
    counting.calls = calls
    monkeypatch.setattr(model_cache, "get_predictor",
                        lambda name, s: model_cache.CachedModel(counting, 0.0, cached.tuned))
    for _, _, group in sent:
        pipeline.run_chunk(job_id, group, settings=settings, store=job_store,
                           send=lambda *m: None)
    assert job_store.get(job_id).chunks_done == job_store.get(job_id).chunks_total
    assert calls == [18], calls  # one call of every patch: batches of 128, not the CPU's 16
