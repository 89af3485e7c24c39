"""JobStore against a real Redis: records, transitions, stamps, listing."""

from __future__ import annotations

import time

import pytest

from caimx.jobs import (
    TRANSITIONS,
    InvalidTransitionError,
    JobState,
    JobStore,
    UnknownJobError,
)


def _new(store: JobStore) -> str:
    job_id = store.new_id()
    store.create(job_id, model="m", input_name="a.tif", input_path="/x/a.tif",
                 movie_shape=[120, 48, 48], movie_dtype="uint16", input_bytes=10)  # fmt: skip
    return job_id


def test_create_and_read_back(job_store: JobStore) -> None:
    before = time.time()
    job_id = _new(job_store)
    job = job_store.get(job_id)
    assert job.state is JobState.QUEUED
    assert job.movie_shape == (120, 48, 48) and job.movie_dtype == "uint16"
    assert job.updated_by == "test" and before <= job.created_at <= job.updated_at
    assert job.chunks_done == 0 and job.error is None and job.params == {}
    assert job_store.list_ids() == [job_id]
    with pytest.raises(ValueError, match="already exists"):
        job_store.create(job_id, model="m", input_name="a", input_path="/a")


def test_every_write_stamps_writer_and_time(job_store: JobStore, redis_client, key_prefix) -> None:
    job_id = _new(job_store)
    worker = JobStore(redis_client, writer="worker:w1", prefix=key_prefix)
    first = job_store.get(job_id).updated_at
    worker.transition(job_id, JobState.RUNNING, started_at=time.time())
    worker.set_progress(job_id, 3, 7)
    job = job_store.get(job_id)
    assert job.updated_by == "worker:w1" and job.updated_at >= first
    assert (job.chunks_done, job.chunks_total) == (3, 7)


def test_transitions_follow_the_table(job_store: JobStore) -> None:
    job_id = _new(job_store)
    with pytest.raises(InvalidTransitionError):
        job_store.transition(job_id, JobState.SUCCEEDED)
    job_store.transition(job_id, JobState.RUNNING)
    job_store.transition(job_id, JobState.RUNNING)  # redelivered task
    job = job_store.transition(job_id, JobState.FAILED, error="bad movie")
    assert job.state is JobState.FAILED and job.error == "bad movie"
    for state in JobState:
        with pytest.raises(InvalidTransitionError):
            job_store.transition(job_id, state)
    assert all(s.terminal == (not TRANSITIONS[s]) for s in JobState)
    with pytest.raises(ValueError):
        job_store.update(job_id, state="queued")


def test_unknown_job(job_store: JobStore) -> None:
    with pytest.raises(UnknownJobError, match="no job with id 'nope'"):
        job_store.get("nope")
    with pytest.raises(UnknownJobError):
        job_store.transition("nope", JobState.RUNNING)


def test_json_fields_round_trip_and_listing_order(job_store: JobStore) -> None:
    first, second = _new(job_store), _new(job_store)
    job_store.update(first, params={"plan": {"tile": 32}}, summary={"n_neurons": 3},
                     timings={"load_model_s": 1.5})  # fmt: skip
    job = job_store.get(first)
    assert job.params == {"plan": {"tile": 32}} and job.summary == {"n_neurons": 3}
    assert job.timings == {"load_model_s": 1.5}
    assert job_store.list_ids() == [second, first]
    job_store.delete(first)
    assert not job_store.exists(first) and job_store.list_ids() == [second]


def _pages(store: JobStore, **filters) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = store.list_page(cursor=cursor, **filters)
        pages.append([job.id for job in page.jobs])
        cursor = page.next_cursor
        if cursor is None:
            return pages


@pytest.mark.parametrize("limit", [1, 3, 50])
def test_state_filter_scans_past_sparse_matches(job_store: JobStore, limit: int) -> None:
    """Matching jobs far apart (more non-matching jobs between them than any batch holds):
    every page is full but the last, no page is empty, and no cursor leads to an empty page."""
    with job_store.client.pipeline(transaction=False) as pipe:
        ids = [job_store.new_id() for _ in range(2400)]
        for n, job_id in enumerate(ids):  # the same time for pairs of jobs: ties are ordered
            pipe.hset(job_store.key(job_id), mapping={
                "id": job_id, "state": "running" if n % 700 in (5, 6) else "queued",
                "created_at": str(1000.0 + n // 2), "updated_at": "0", "updated_by": "test",
                "model": "m", "input_name": "a.tif", "input_path": "/x/a.tif"})  # fmt: skip
            pipe.zadd(job_store.index_key, {job_id: 1000.0 + n // 2})
        pipe.execute()
    order = job_store.client.zrevrange(job_store.index_key, 0, -1)
    running = [i for i in order if job_store.state(i) is JobState.RUNNING]
    assert len(running) == 8
    pages = _pages(job_store, state=JobState.RUNNING, limit=limit)
    assert [i for page in pages for i in page] == running
    assert all(page for page in pages)
    assert [len(page) for page in pages[:-1]] == [limit] * (len(pages) - 1)
    assert len(pages) == -(-len(running) // limit)
    # the last match is followed by 2400 - 2106 non-matching jobs, the first preceded by many
    assert _pages(job_store, state=JobState.FAILED, limit=limit) == [[]]
    every = _pages(job_store, limit=limit * 400)
    assert [i for page in every for i in page] == order and all(every)
