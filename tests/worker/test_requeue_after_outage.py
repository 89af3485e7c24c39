"""After a Redis outage the worker queues every uncounted chunk of running jobs again.

Real Redis, real plans on disk (as ``prepare_job`` writes them); the sender records what would go
to the broker.
"""

from __future__ import annotations

import time
from pathlib import Path

from caimx.jobs import JobState, JobStore
from caimx.queue import TASK_FINALIZE_JOB, TASK_RUN_CHUNK
from caimx.settings import Settings
from model.inference.engine import PLAN_FILE
from model.inference.params import InferenceParams, PlanParams
from model.inference.plan import make_plan
from worker.pipeline import requeue_unfinished, work_dir


def _job(store: JobStore, settings: Settings, *, state: JobState, shape=None, done=0) -> tuple:
    """A job in ``state``; with ``shape`` a plan of that movie and the first ``done`` chunks
    counted. Returns the job id and its chunk ids."""
    job_id = store.new_id()
    store.create(job_id, model="deepcaimx-mini", input_name="m.tif", input_path="/m.tif")
    if state is not JobState.QUEUED:
        store.transition(job_id, JobState.RUNNING, started_at=time.time())
    chunk_ids: list[str] = []
    if shape is not None:
        plan = make_plan(shape, patch=(100, 32, 32), trace_offset=2,
                         params=PlanParams(tiles_per_chunk=4), movie_low=0.0, movie_high=1.0,
                         all_params=InferenceParams().to_dict())  # fmt: skip
        work = work_dir(settings, job_id)
        work.mkdir(parents=True)
        (work / PLAN_FILE).write_text(plan.to_json(), encoding="utf-8")
        chunk_ids = [chunk.id for chunk in plan.chunks]
        store.reset_chunks(job_id, len(chunk_ids))
        for chunk_id in chunk_ids[:done]:
            store.complete_chunk(job_id, chunk_id)
    if state.terminal:
        store.transition(job_id, state, finished_at=time.time())
    return job_id, chunk_ids


def test_only_uncounted_chunks_of_running_jobs_are_queued_again(
    job_store: JobStore, settings: Settings, tmp_path: Path,
) -> None:  # fmt: skip
    settings = settings.model_copy(update={"data_dir": tmp_path})
    half, half_chunks = _job(job_store, settings, state=JobState.RUNNING, shape=(250, 70, 70),
                             done=5)  # fmt: skip
    counted, _ = _job(job_store, settings, state=JobState.RUNNING, shape=(120, 40, 40), done=99)
    preparing, _ = _job(job_store, settings, state=JobState.RUNNING)  # no plan yet
    queued, _ = _job(job_store, settings, state=JobState.QUEUED)
    canceled, _ = _job(job_store, settings, state=JobState.CANCELED, shape=(120, 40, 40))
    assert len(half_chunks) > 5

    sent: list[tuple] = []
    n = requeue_unfinished(job_store, settings, lambda *message: sent.append(message))

    missing = [(TASK_RUN_CHUNK, half, chunk_id) for chunk_id in half_chunks[5:]]
    assert n == len(missing)
    assert sorted(sent) == sorted([*missing, (TASK_FINALIZE_JOB, counted)])
    assert not {preparing, queued, canceled} & {message[1] for message in sent}
    assert job_store.get(half).chunks_done == 5  # queueing again counts nothing
