"""A GPU worker's configuration, run on the CPU: the Keras runtime on JAX under Celery.

The ``worker-jax`` image runs ``caimx worker`` with ``KERAS_BACKEND=jax`` and
``CAIMX_MODEL_RUNTIME=keras`` (no TensorFlow), several chunks per task, batches staged on the
device and left in flight. Here the same worker runs with JAX on the CPU, in a real prefork
Celery worker on a Redis database of its own, and its job must find what the session's
SavedModel worker finds in the same movie.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from fastapi.testclient import TestClient
from job_polling import wait_job
from small_movies import blinking_disk_movie
from userkeys import make_user

from caimx.settings import Settings
from service.app import create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def jax_api(spare_redis_url: str, tmp_path_factory: pytest.TempPathFactory,
            worker_launcher) -> Iterator[TestClient]:  # fmt: skip
    start_worker, process_env = worker_launcher
    settings = Settings(data_dir=tmp_path_factory.mktemp("jax-data"), redis_url=spare_redis_url)
    env = {**process_env(settings), "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "CAIMX_MODEL_RUNTIME": "keras", "CAIMX_BATCH_SIZE": "8",
           "CAIMX_CHUNKS_PER_TASK": "4", "CAIMX_READ_AHEAD": "2",
           "CAIMX_CANDIDATE_THREADS": "2", "CAIMX_BATCHES_IN_FLIGHT": "2",
           "CAIMX_TILES_PER_CHUNK": "2"}
    headers = {"Authorization": f"Bearer {make_user(spare_redis_url)}"}
    with (start_worker(settings, env, tmp_path_factory.mktemp("jax-worker-log")),
          TestClient(create_app(settings), headers=headers) as client):
        yield client


@pytest.fixture
def api(settings: Settings, celery_worker: str, auth_headers: dict) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=auth_headers) as client:
        yield client


def _run(client: TestClient, movie: Path) -> tuple[dict, zarr.Group]:
    with movie.open("rb") as handle:
        response = client.post("/v1/jobs", files={"file": (movie.name, handle)})
    assert response.status_code == 202, response.text
    job = wait_job(client.get, response.json()["id"], timeout=600)
    assert job["state"] == "succeeded", job["error"]
    path = client.get(f"/v1/jobs/{job['id']}/result").json()["path"]
    return job, zarr.open_group(path, mode="r")


def test_a_jax_worker_finds_what_the_saved_model_worker_finds(
    jax_api: TestClient, api: TestClient, tmp_path: Path,
) -> None:  # fmt: skip
    movie = blinking_disk_movie(tmp_path / "movie.npy")
    jax_job, on_jax = _run(jax_api, movie)
    tf_job, on_tf = _run(api, movie)
    assert jax_job["progress"]["chunks_total"] > tf_job["progress"]["chunks_total"] // 2
    assert on_jax.attrs["parameters"]["plan"]["tiles_per_chunk"] == 2
    assert on_tf.attrs["parameters"]["plan"]["tiles_per_chunk"] != 2
    [network] = on_jax.attrs["software"]["network"]  # recorded by the GPU tasks' chunks
    assert network.startswith("Keras ") and "JAX" in network and "CPU" in network, network
    assert on_tf.attrs["software"]["network"][0].startswith("TensorFlow ")
    footprints = on_jax["footprints"][...]
    assert len(footprints) >= 1
    np.testing.assert_array_equal(footprints > 0, on_tf["footprints"][...] > 0)
    np.testing.assert_allclose(on_jax["traces"][...], on_tf["traces"][...], rtol=1e-3, atol=1e-3)
    # another backend's convolutions ran (equal only to round-off)
    assert not np.array_equal(on_jax["traces"][...], on_tf["traces"][...])
    np.testing.assert_allclose(on_jax["attention_mean"][...], on_tf["attention_mean"][...],
                               atol=1e-3)
    assert on_jax["calcium"].shape == on_tf["calcium"].shape == on_jax["traces"].shape
