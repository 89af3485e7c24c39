"""Waiting for a job through the API, shared by the worker and reliability tests."""

from __future__ import annotations

import time
from collections.abc import Callable

TERMINAL = ("succeeded", "failed", "canceled")


def finished(job: dict) -> bool:
    return job["state"] in TERMINAL


def wait_job(get: Callable, job_id: str, *, timeout: float = 240,
             until: Callable[[dict], bool] = finished) -> dict:  # fmt: skip
    """Poll ``get(path)`` (a client's ``get``) until the job satisfies ``until``."""
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        response = get(f"/v1/jobs/{job_id}")
        if response.status_code == 200:
            job = response.json()
            if until(job):
                return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job}")
