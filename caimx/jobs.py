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
    movie_layout: dict[str, int] = field(default_factory=dict)
    """``planes``, ``plane``, ``channels``, ``channel`` of the file (``MovieReader.layout``)."""
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
    source: dict[str, Any] = field(default_factory=dict)
    """Where the movie came from: ``{"kind": "multipart" | "upload" | "path", ...}``."""
    input_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of ``model.io.open_movie`` (``dataset``, ``channel``, ``fps``...)."""
    request: dict[str, Any] = field(default_factory=dict)
    """The processing parameters as the client sent them (validated)."""
    webhook_url: str | None = None
    chunks_started_at: float | None = None
    chunk_seconds: float = 0.0
    model_load_seconds: float = 0.0
    expired_at: float | None = None
    owner: str = ""
    """The user who submitted the job (only they and admins see it)."""


_JSON_FIELDS = {"movie_shape", "params", "timings", "summary", "source", "input_options",
                "request", "movie_layout"}  # fmt: skip
_INT_FIELDS = {"input_bytes", "chunks_done", "chunks_total", "attempts"}
_FLOAT_FIELDS = {
    "created_at", "updated_at", "started_at", "finished_at", "movie_fps", "chunks_started_at",
    "chunk_seconds", "model_load_seconds", "expired_at",
}  # fmt: skip
_DICT_FIELDS = ("params", "timings", "summary", "source", "input_options", "request",
                "movie_layout")  # fmt: skip
_COUNT_CHUNK = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return {0, -1, -1}
end
local added = redis.call('SADD', KEYS[2], ARGV[1])
if added == 1 then
  redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
  redis.call('HINCRBYFLOAT', KEYS[1], 'chunk_seconds', ARGV[2])
  redis.call('HINCRBYFLOAT', KEYS[1], 'model_load_seconds', ARGV[3])
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[4], 'updated_by', ARGV[5])
end
return {added, tonumber(redis.call('HGET', KEYS[1], 'chunks_done')),
        tonumber(redis.call('HGET', KEYS[1], 'chunks_total') or '0')}
"""


@dataclass(frozen=True)
class ChunkCount:
    """Result of :meth:`JobStore.complete_chunk`."""

    added: bool
    """False when this chunk had been counted before (a redelivered task) or the job stopped."""
    done: int
    total: int
    running: bool

    @property
    def last(self) -> bool:
        """All chunks are done: time to finalize."""
        return self.running and self.total > 0 and self.done >= self.total


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


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


def job_from_record(raw: Mapping[str, str]) -> Job:
    """The job in a Redis hash as ``HGETALL`` returns it (decoded strings), whoever read it."""
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
    for key in _DICT_FIELDS:
        if values.get(key) is None:
            values.pop(key, None)
    for key in _INT_FIELDS | {"chunk_seconds", "model_load_seconds"}:
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

    def owner_index_key(self, owner: str) -> str:
        """Sorted set of one user's jobs by creation time."""
        return f"{self.prefix}:jobs:owner:{owner}"

    def active_key(self, owner: str) -> str:
        """Set of one user's queued and running jobs."""
        return f"{self.prefix}:jobs:active:{owner}"

    def chunks_key(self, job_id: str) -> str:
        """Set of the chunk ids that have been counted as done."""
        return f"{self.prefix}:job:{job_id}:chunks"

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
            if extra.get("owner"):
                pipe.zadd(self.owner_index_key(extra["owner"]), {job_id: now})
                pipe.sadd(self.active_key(extra["owner"]), job_id)
            created, *_ = pipe.execute()
        if not created:
            raise ValueError(f"job {job_id} already exists")
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        raw = self.client.hgetall(self.key(job_id))
        if not raw:
            raise UnknownJobError(job_id)
        return job_from_record(raw)

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

    def list_page(
        self, *, limit: int = 50, cursor: str | None = None, state: JobState | None = None,
        since: float | None = None, owner: str | None = None,
    ) -> JobPage:  # fmt: skip
        """Jobs newest first, ``limit`` at a time, optionally only one state or created >= since.

        ``cursor`` is the ``next_cursor`` of the previous page (opaque to clients: the creation
        time and id of the last job seen), so pages stay stable while new jobs arrive.
        ``owner``: only that user's jobs.

        The index is read in batches until ``limit`` jobs match and one more matching job shows
        that there is a next page, or until it ends. However sparse the matches, a page is empty
        only when no matching job is left, and ``next_cursor`` is set only when the next page
        has a job. With ``state``, only the states are read until a job matches.
        """
        index = self.index_key if owner is None else self.owner_index_key(owner)
        low = "-inf" if since is None else repr(float(since))
        high, after = "+inf", None
        if cursor:
            try:
                score, after = cursor.split("~", 1)
                high = repr(float(score))
            except ValueError as exc:
                raise ValueError(f"not a valid cursor: {cursor!r}") from exc
        jobs: list[Job] = []
        last = ""
        batch = limit + 1 if state is None else max(limit * 2, 500)
        offset = 0
        while True:
            rows = self.client.zrevrangebyscore(
                index, high, low, start=offset, num=batch, withscores=True
            )
            if not rows:
                return JobPage(jobs, None)
            offset += len(rows)
            if after is not None:  # ties with the cursor's time: skip up to and including its id
                rows = [(i, s) for i, s in rows if not (s == float(high) and i >= after)]
            if state is not None and rows:
                with self.client.pipeline(transaction=False) as pipe:
                    for job_id, _ in rows:
                        pipe.hget(self.key(job_id), "state")
                    states = pipe.execute()
                wanted = limit - len(jobs) + 1  # the page's rest and one to show there is more
                rows = [r for r, s in zip(rows, states, strict=True) if s == state][:wanted]
            with self.client.pipeline(transaction=False) as pipe:  # one round trip per batch
                for job_id, _ in rows:
                    pipe.hgetall(self.key(job_id))
                records = pipe.execute()
            for (job_id, score), raw in zip(rows, records, strict=True):
                if not raw:
                    continue
                job = job_from_record(raw)
                if state is not None and job.state is not state:
                    continue  # it changed state in between
                if len(jobs) == limit:
                    return JobPage(jobs, last)
                jobs.append(job)
                last = f"{score!r}~{job_id}"
            batch = min(batch * 2, 10_000)

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
                    owner = pipe.hget(key, "owner")
                    fields = dict(values)
                    if new is not None:
                        fields["state"] = new
                    pipe.multi()
                    pipe.hset(key, mapping=self._stamp(fields))
                    if new is not None and new.terminal and owner:
                        pipe.srem(self.active_key(owner), job_id)
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

    def reset_chunks(self, job_id: str, total: int) -> None:
        """Start counting chunks from zero (a new plan, or a redelivered prepare)."""
        with self.client.pipeline() as pipe:
            pipe.delete(self.chunks_key(job_id))
            pipe.hset(self.key(job_id), mapping=self._stamp({
                "chunks_done": 0, "chunks_total": int(total), "chunk_seconds": 0.0,
                "model_load_seconds": 0.0, "chunks_started_at": time.time()}))  # fmt: skip
            pipe.execute()

    def done_chunks(self, job_id: str) -> set[str]:
        return set(self.client.smembers(self.chunks_key(job_id)))

    def complete_chunk(
        self, job_id: str, chunk_id: str, *, seconds: float = 0.0, load_s: float = 0.0
    ) -> ChunkCount:
        """Count ``chunk_id`` as done, once: a redelivered chunk is not counted twice.

        Atomic (one Lua script): the chunk id goes into the job's set of done chunks and, only if
        it was not there, ``chunks_done`` is incremented. Nothing is counted unless the job is
        running (a canceled job stays as it is).
        """
        added, done, total = self.client.eval(
            _COUNT_CHUNK, 2, self.key(job_id), self.chunks_key(job_id), chunk_id,
            repr(float(seconds)), repr(float(load_s)), repr(time.time()), self.writer,
        )  # fmt: skip
        running = int(done) >= 0
        return ChunkCount(bool(added), max(int(done), 0), max(int(total), 0), running)

    def active_jobs(self, owner: str) -> int:
        """How many of ``owner``'s jobs are queued or running (stale entries are dropped)."""
        count = 0
        for job_id in self.client.smembers(self.active_key(owner)):
            state = self.client.hget(self.key(job_id), "state")
            if state is None or JobState(state).terminal:
                self.client.srem(self.active_key(owner), job_id)
            else:
                count += 1
        return count

    def owner_job_ids(self, owner: str) -> list[str]:
        return list(self.client.zrange(self.owner_index_key(owner), 0, -1))

    def delete(self, job_id: str) -> None:
        owner = self.client.hget(self.key(job_id), "owner")
        with self.client.pipeline() as pipe:
            pipe.delete(self.key(job_id), self.chunks_key(job_id))
            pipe.zrem(self.index_key, job_id)
            if owner:
                pipe.zrem(self.owner_index_key(owner), job_id)
                pipe.srem(self.active_key(owner), job_id)
            pipe.execute()
