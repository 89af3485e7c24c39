"""Chunk counting in the job hash and the retention cleanup, on a real Redis and real files."""

from __future__ import annotations

import os
import time
from pathlib import Path

from caimx.jobs import JobState, JobStore
from caimx.retention import cleanup
from caimx.settings import Settings
from caimx.upload_store import UploadStore


def _job(store: JobStore, **values) -> str:
    job_id = store.new_id()
    store.create(job_id, model="m", input_name="a.tif", input_path="/x/a.tif", **values)
    return job_id


def test_a_redelivered_chunk_is_counted_once(job_store: JobStore) -> None:
    job_id = _job(job_store)
    job_store.transition(job_id, JobState.RUNNING)
    job_store.reset_chunks(job_id, 2)
    first = job_store.complete_chunk(job_id, "w0-t0", seconds=1.5)
    again = job_store.complete_chunk(job_id, "w0-t0", seconds=1.5)
    assert (first.added, first.done, first.last) == (True, 1, False)
    assert (again.added, again.done, again.last) == (False, 1, False)
    last = job_store.complete_chunk(job_id, "w1-t0", seconds=0.5, load_s=2.0)
    assert last.last and last.done == 2
    job = job_store.get(job_id)
    assert job.chunks_done == 2 and job.chunk_seconds == 2.0 and job.model_load_seconds == 2.0
    assert job_store.done_chunks(job_id) == {"w0-t0", "w1-t0"}


def test_a_canceled_job_counts_nothing(job_store: JobStore) -> None:
    job_id = _job(job_store)
    job_store.transition(job_id, JobState.RUNNING)
    job_store.reset_chunks(job_id, 3)
    job_store.transition(job_id, JobState.CANCELED)
    count = job_store.complete_chunk(job_id, "w0-t0")
    assert not count.running and not count.added and not count.last
    assert job_store.get(job_id).chunks_done == 0


def _old(path: Path, hours: float) -> None:
    stamp = time.time() - hours * 3600
    os.utime(path, (stamp, stamp))


def test_cleanup_keeps_what_running_jobs_need(tmp_path: Path, job_store: JobStore) -> None:
    settings = Settings(data_dir=tmp_path, result_retention_hours=24, upload_retention_hours=2)
    uploads = UploadStore(job_store.client, prefix=job_store.prefix)
    long_ago = time.time() - 48 * 3600
    done = _job(job_store)
    job_store.transition(done, JobState.RUNNING)
    job_store.transition(done, JobState.SUCCEEDED, finished_at=long_ago)
    recent = _job(job_store)
    job_store.transition(recent, JobState.RUNNING)
    job_store.transition(recent, JobState.FAILED, finished_at=time.time())
    running = _job(job_store)
    job_store.transition(running, JobState.RUNNING, started_at=long_ago)
    for job_id in (done, recent, running):
        (settings.results_dir / job_id / "result.zarr").mkdir(parents=True)
    orphan = settings.results_dir / ("f" * 32)
    orphan.mkdir()
    _old(orphan, 48)

    settings.resumable_dir.mkdir(parents=True)
    idle = uploads.create(length=10, filename="a.tif", folder=settings.resumable_dir)
    used = uploads.create(length=10, filename="b.tif", folder=settings.resumable_dir)
    fresh = uploads.create(length=10, filename="c.tif", folder=settings.resumable_dir)
    for upload in (idle, used, fresh):
        Path(upload.path).write_bytes(b"0123456789")
    uploads.add_job(used.id, running)
    stale = time.time() - 3 * 3600
    job_store.client.zadd(uploads.index_key, {idle.id: stale, used.id: stale})

    dry = cleanup(settings, job_store, uploads, dry_run=True)
    assert (settings.results_dir / done).exists() and dry.results
    report = cleanup(settings, job_store, uploads)
    assert not (settings.results_dir / done).exists()
    assert job_store.get(done).expired_at is not None
    assert (settings.results_dir / recent).exists() and (settings.results_dir / running).exists()
    assert not orphan.exists() and str(orphan) in report.orphans
    assert report.uploads == [idle.id] and report.kept_active == [used.id]
    assert not Path(idle.path).exists()
    assert Path(used.path).exists() and Path(fresh.path).exists()


def test_cleanup_command(tmp_path: Path, redis_url: str) -> None:
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIMX_")}
    env.update(CAIMX_DATA_DIR=str(tmp_path), CAIMX_REDIS_URL=redis_url)
    code = "import sys; from caimx.cli import main; sys.exit(main())"
    out = subprocess.run([sys.executable, "-c", code, "cleanup", "--dry-run"], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert set(json.loads(out.stdout)) == {"results", "uploads", "orphans", "kept_active"}
