"""Job states, their allowed transitions, and the one store that reads and writes job records.

A job is one Redis hash, ``{prefix}:job:{id}``, plus its entry in the sorted set
``{prefix}:jobs`` (score: creation time) used for listing. :class:`JobStore` is the only code that
touches those keys; the service and the worker both use it, so they cannot drift apart. Every write
stamps ``updated_at`` and ``updated_by`` (the writer, e.g. ``service`` or ``worker@host``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis

DEFAULT_PREFIX = "caimx"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return not TRANSITIONS[self]


TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELED}),
    # running -> running: the broker redelivered the task after a worker died mid-job.
    JobState.RUNNING: frozenset(
        {JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELED: frozenset(),
}


class UnknownJobError(KeyError):
    """No job with this id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"no job with id {self.job_id!r}"


class InvalidTransitionError(RuntimeError):
    """The job is not in a state from which the requested state can be reached."""

    def __init__(self, job_id: str, current: JobState, wanted: JobState) -> None:
        super().__init__(f"job {job_id} is {current}; it cannot become {wanted}")
        self.job_id, self.current, self.wanted = job_id, current, wanted


@dataclass(frozen=True)
class Job:
    """A job record as stored; times are Unix seconds (UTC)."""

    id: str
    state: JobState
    created_at: float
    updated_at: float
    updated_by: str
    model: str
    input_name: str
    input_path: str
    input_bytes: int = 0
    input_sha256: str = ""
    movie_shape: tuple[int, ...] | None = None
    movie_dtype: str | None = None
    movie_fps: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    chunks_done: int = 0
    chunks_total: int = 0
    attempts: int = 0
    error: str | None = None
    result_path: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


_JSON_FIELDS = {"movie_shape", "params", "timings", "summary"}
_INT_FIELDS = {"input_bytes", "chunks_done", "chunks_total", "attempts"}
_FLOAT_FIELDS = {"created_at", "updated_at", "started_at", "finished_at", "movie_fps"}


def _encode(values: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in values.items():
        if key in _JSON_FIELDS:
            out[key] = json.dumps(value)
        elif value is None:
            out[key] = ""
        else:
            out[key] = str(value)
    return out


def _decode(raw: Mapping[str, str]) -> Job:
    values: dict[str, Any] = {}
    for key, text in raw.items():
        if key not in Job.__dataclass_fields__:
            continue
        if key in _JSON_FIELDS:
            values[key] = json.loads(text) if text else None
        elif text == "":
            values[key] = None
        elif key in _INT_FIELDS:
            values[key] = int(text)
        elif key in _FLOAT_FIELDS:
            values[key] = float(text)
        else:
            values[key] = text
    if values.get("movie_shape") is not None:
        values["movie_shape"] = tuple(values["movie_shape"])
    for key in ("params", "timings", "summary"):
        if values.get(key) is None:
            values.pop(key, None)
    for key in _INT_FIELDS:
        if values.get(key) is None:
            values.pop(key, None)
    values["state"] = JobState(values["state"])
    return Job(**values)


class JobStore:
    """Reads and writes job records in Redis.

    Parameters
    ----------
    client
        A Redis client created with ``decode_responses=True``.
    writer
        Who is writing (``service``, ``worker@host``); stamped on every write.
    prefix
        Namespace of all keys, so tests and several deployments can share one Redis.
    """

    def __init__(self, client: redis.Redis, *, writer: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.writer = writer
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, *, writer: str, prefix: str = DEFAULT_PREFIX) -> JobStore:
        return cls(redis.Redis.from_url(url, decode_responses=True), writer=writer, prefix=prefix)

    def key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:jobs"

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def _stamp(self, values: Mapping[str, Any]) -> dict[str, str]:
        return _encode({**values, "updated_at": time.time(), "updated_by": self.writer})

    def create(
        self, job_id: str, *, model: str, input_name: str, input_path: str, **extra: Any
    ) -> Job:
        """Record a new job in state ``queued``."""
        now = time.time()
        values = {
            "id": job_id,
            "state": JobState.QUEUED,
            "created_at": now,
            "model": model,
            "input_name": input_name,
            "input_path": input_path,
            **extra,
        }
        key = self.key(job_id)
        with self.client.pipeline() as pipe:
            pipe.hsetnx(key, "id", job_id)
            pipe.hset(key, mapping=self._stamp(values))
            pipe.zadd(self.index_key, {job_id: now})
            created, *_ = pipe.execute()
        if not created:
            raise ValueError(f"job {job_id} already exists")
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        raw = self.client.hgetall(self.key(job_id))
        if not raw:
            raise UnknownJobError(job_id)
        return _decode(raw)

    def exists(self, job_id: str) -> bool:
        return bool(self.client.exists(self.key(job_id)))

    def state(self, job_id: str) -> JobState:
        value = self.client.hget(self.key(job_id), "state")
        if value is None:
            raise UnknownJobError(job_id)
        return JobState(value)

    def list_ids(self, *, limit: int = 100, offset: int = 0) -> list[str]:
        """Newest first."""
        return list(self.client.zrevrange(self.index_key, offset, offset + limit - 1))

    def update(self, job_id: str, **values: Any) -> None:
        """Set fields that do not change the state (parameters, movie facts, summary)."""
        if "state" in values:
            raise ValueError("use transition() to change a job's state")
        self._write(job_id, None, values)

    def transition(self, job_id: str, new: JobState, **values: Any) -> Job:
        """Move a job to ``new`` if the transition table allows it, setting ``values`` at once.

        Raises
        ------
        UnknownJobError, InvalidTransitionError
        """
        self._write(job_id, JobState(new), values)
        return self.get(job_id)

    def _write(self, job_id: str, new: JobState | None, values: Mapping[str, Any]) -> None:
        key = self.key(job_id)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    current = pipe.hget(key, "state")
                    if current is None:
                        raise UnknownJobError(job_id)
                    current = JobState(current)
                    if new is not None and new not in TRANSITIONS[current]:
                        raise InvalidTransitionError(job_id, current, new)
                    fields = dict(values)
                    if new is not None:
                        fields["state"] = new
                    pipe.multi()
                    pipe.hset(key, mapping=self._stamp(fields))
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def set_progress(self, job_id: str, done: int, total: int) -> None:
        """Record chunks done / total of a running job (cheap; called after every chunk)."""
        self.client.hset(
            self.key(job_id),
            mapping=self._stamp({"chunks_done": int(done), "chunks_total": int(total)}),
        )

    def delete(self, job_id: str) -> None:
        with self.client.pipeline() as pipe:
            pipe.delete(self.key(job_id))
            pipe.zrem(self.index_key, job_id)
            pipe.execute()
