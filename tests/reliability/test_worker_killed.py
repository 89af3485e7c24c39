"""A worker killed with SIGKILL in the middle of a chunk: the chunk runs again, nothing is lost."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import redis
import tifffile
from fastapi.testclient import TestClient
from job_polling import wait_job
from reliability_parts import result_arrays, start_worker

from caimx.jobs import JobStore
from caimx.settings import Settings
from service.app import create_app

pytestmark = pytest.mark.slow


def started_unfinished(client: redis.Redis, store: JobStore, job_id: str) -> set[str]:
    """Chunks of ``job_id`` that a worker started (delivery counted) and did not finish."""
    deliveries = client.hgetall(f"{store.key(job_id)}:deliveries")
    started = {task.split(" ", 1)[1] for task in deliveries if task.startswith("chunk ")}
    return started - set(store.done_chunks(job_id))


def test_sigkill_mid_chunk_redelivers_and_gives_the_same_result(
    rel_settings: Settings, rel_key: str, workers: list, tmp_path: Path, make_movie,
) -> None:  # fmt: skip
    settings = rel_settings.model_copy(update={"tiles_per_chunk": 1})
    movie = tmp_path / "movie.tif"
    tifffile.imwrite(movie, make_movie(t=160, h=48, w=48, seed=3))
    hold = tmp_path / "hold"
    hold.mkdir()
    first = start_worker(settings, workers, hold=hold)  # runs the reference job as usual
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    store = JobStore(client, writer="test")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {rel_key}"}) as api:
        def submit() -> str:
            response = api.post("/v1/jobs", files={"file": ("movie.tif", movie.read_bytes())})
            assert response.status_code == 202, response.text
            return response.json()["id"]

        reference = wait_job(api.get, submit())
        assert reference["state"] == "succeeded", reference
        assert reference["progress"]["chunks_total"] >= 4

        # A chunk takes ~50 ms on a fast CPU, so a kill sent once a chunk is seen running could
        # land after it finished. Armed, the first worker runs one chunk of the next job to its
        # end and stops the next one at its first network batch until it is killed.
        (hold / "armed").touch()
        job_id = submit()
        deadline = time.monotonic() + 120
        while not (hold / "holding").exists():
            assert first.process.poll() is None, first.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no chunk was held running"
            time.sleep(0.01)
        assert api.get(f"/v1/jobs/{job_id}").json()["progress"]["chunks_done"] >= 1
        first.kill()
        killed_at = time.monotonic()
        in_flight = started_unfinished(client, store, job_id)
        assert len(in_flight) == 1, in_flight  # the held chunk: started, never finished
        (victim,) = in_flight  # it died in the middle of this chunk
        assert store.get(job_id).state == "running"

        start_worker(settings, workers)  # restores the unacked chunk after the visibility timeout
        done = wait_job(api.get, job_id)
        recovered_s = time.monotonic() - killed_at
    assert done["state"] == "succeeded", done
    assert done["progress"]["chunks_done"] == done["progress"]["chunks_total"]
    deliveries = client.hgetall(f"{store.key(job_id)}:deliveries")
    assert int(deliveries[f"chunk {victim}"]) == 2  # the killed chunk ran again, once
    expected, got = result_arrays(settings, reference["id"]), result_arrays(settings, job_id)
    assert expected["footprints"].shape[0] > 0  # the comparison below is of neurons found
    assert got["footprints"].shape == expected["footprints"].shape  # no neuron twice, none lost
    np.testing.assert_array_equal(got["footprints"], expected["footprints"])
    np.testing.assert_array_equal(got["traces"], expected["traces"])
    assert recovered_s < 120
    print(f"recovered {recovered_s:.1f} s after SIGKILL (visibility timeout "
          f"{settings.visibility_timeout_s} s); chunk {victim} delivered twice")
    client.close()
