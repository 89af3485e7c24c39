"""Telling a client's URL that its job finished: a signed POST, retried with backoff.

The body is JSON: ``{"event": "job.finished", "job": {...the job as GET /v1/jobs/{id}...}}``.
Headers: ``Caimx-Timestamp`` (Unix seconds) and ``Caimx-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``<timestamp>.<body>`` with the shared secret ``CAIMX_WEBHOOK_SECRET``. A receiver
recomputes it, compares in constant time and rejects old timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

SIGNATURE_HEADER = "Caimx-Signature"
TIMESTAMP_HEADER = "Caimx-Timestamp"


class WebhookError(RuntimeError):
    """The receiver did not answer 2xx."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def payload(job: dict[str, Any]) -> bytes:
    return json.dumps({"event": "job.finished", "job": job}, sort_keys=True).encode()


def deliver(url: str, body: bytes, *, secret: str, timeout_s: float) -> int:
    """POST ``body`` to ``url``, signed; returns the status. Raises :class:`WebhookError`."""
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
               SIGNATURE_HEADER: sign(secret, timestamp, body), "User-Agent": "caimx-webhook"}
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout_s,
                              follow_redirects=False)
    except httpx.HTTPError as exc:
        raise WebhookError(f"{url}: {exc}") from exc
    if not 200 <= response.status_code < 300:
        raise WebhookError(f"{url} answered {response.status_code}")
    return response.status_code


def backoff_s(first_s: float, retries: int, *, cap_s: float = 3600.0) -> float:
    """Delay before retry ``retries + 1``: ``first_s``, doubling, capped."""
    return min(first_s * 2**retries, cap_s)
