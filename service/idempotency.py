"""``Idempotency-Key``: a retried ``POST /v1/jobs`` returns the job the first attempt created.

The key (hashed) maps to the job id for a day: ``{prefix}:idempotency:<sha256 of key>``. The first
request reserves it before creating the job and drops it again if creation fails. A JSON request
also records a fingerprint of its body; the same key with a different body is refused (422).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import redis

from service.errors import IdempotencyConflictError, RequestInProgressError

TTL_S = 24 * 3600


@dataclass(frozen=True)
class Reservation:
    key: str
    job_id: str
    replay: bool
    """True when the job already exists: return it instead of creating a new one."""


def _redis_key(prefix: str, header: str, owner: str = "") -> str:
    digest = hashlib.sha256(f"{owner}\n{header}".encode() if owner else header.encode())
    return f"{prefix}:idempotency:{digest.hexdigest()}"


def reserve(client: redis.Redis, prefix: str, header: str, *, job_id: str,
            fingerprint: str = "", owner: str = "") -> Reservation:  # fmt: skip
    """Claim ``header`` for ``job_id``, or find the job an earlier request made with it.

    Keys are ``owner``'s own: the same key sent by two users names two jobs.
    """
    if not 1 <= len(header) <= 255:
        raise IdempotencyConflictError("Idempotency-Key must be 1 to 255 characters")
    key = _redis_key(prefix, header, owner)
    value = json.dumps({"job_id": job_id, "fingerprint": fingerprint})
    if client.set(key, value, nx=True, ex=TTL_S):
        return Reservation(key, job_id, replay=False)
    stored = json.loads(client.get(key) or "{}")
    if fingerprint and stored.get("fingerprint") and stored["fingerprint"] != fingerprint:
        raise IdempotencyConflictError(
            "this Idempotency-Key was used for a different request; use a new key"
        )
    earlier = stored.get("job_id", "")
    if not client.exists(f"{prefix}:job:{earlier}"):
        raise RequestInProgressError("a request with this Idempotency-Key is still being processed",
                              headers={"Retry-After": "2"})  # fmt: skip
    return Reservation(key, earlier, replay=True)


def release(client: redis.Redis, reservation: Reservation) -> None:
    """Forget a reservation whose job could not be created (the client may retry)."""
    client.delete(reservation.key)


def fingerprint(body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(canonical).hexdigest()
