"""Fixtures of the export tests."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from api_fixtures import api, api_settings
from fastapi.testclient import TestClient
from small_result import write_small_result

from caimx.jobs import JobState, JobStore
from caimx.settings import Settings

__all__ = ["api", "api_settings", "finished_job", "small_result"]


@pytest.fixture
def small_result(tmp_path: Path) -> Path:
    return write_small_result(tmp_path / "job" / "result.zarr")


@pytest.fixture
def finished_job(api: TestClient, api_settings: Settings, job_store_for_api: JobStore) -> str:
    """A job that has succeeded with a small result group in the API's results folder."""
    store = job_store_for_api
    job_id = store.new_id()
    result = write_small_result(api_settings.results_dir / job_id / "result.zarr")
    store.create(job_id, model="deepcaimx-mini", input_name="movie.tif", input_path="/nowhere",
                 movie_shape=[50, 40, 36], movie_dtype="uint16", movie_fps=30.0,
                 owner="tester")  # fmt: skip
    store.transition(job_id, JobState.RUNNING, started_at=time.time())
    store.transition(job_id, JobState.SUCCEEDED, finished_at=time.time(),
                     result_path=str(result))  # fmt: skip
    return job_id


@pytest.fixture
def job_store_for_api(redis_client, key_prefix: str) -> JobStore:
    return JobStore(redis_client, writer="test", prefix=key_prefix)
