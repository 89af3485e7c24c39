"""API keys for tests: a user in a Redis key prefix, and its ``Authorization`` header."""

from __future__ import annotations

import redis

from caimx.jobs import DEFAULT_PREFIX
from caimx.users import UserStore


def make_user(redis_url: str, prefix: str = DEFAULT_PREFIX, name: str = "tester", *,
              admin: bool = False) -> str:  # fmt: skip
    """Create (or re-key) user ``name`` in ``prefix``; returns its API key."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return UserStore(client, prefix=prefix).add(name, admin=admin, replace=True).key
    finally:
        client.close()


def bearer(redis_url: str, prefix: str = DEFAULT_PREFIX, name: str = "tester", *,
           admin: bool = False) -> dict[str, str]:  # fmt: skip
    """``Authorization`` header of a fresh key of user ``name``."""
    return {"Authorization": f"Bearer {make_user(redis_url, prefix, name, admin=admin)}"}
