"""Users and their API keys, in Redis; a key is only ever stored as a salted scrypt hash.

A key looks like ``caimx_<key id>_<secret>``: the key id (16 hex digits) finds the user, the
secret is checked against ``scrypt(secret, salt)`` with a salt of its own. The key itself is shown
once, when it is made (``caimx users add NAME``), and never written anywhere.

``{prefix}:user:{name}`` (hash: name, admin, created_at, key_id, salt, hash, kdf and the user's
own ``limit_*`` fields, see :class:`UserLimits`),
``{prefix}:users`` (set of names) and ``{prefix}:apikey:{key id}`` (the name) are touched
only by :class:`UserStore`.
Verifying a key costs an scrypt (tens of milliseconds), so a verified key is remembered in the
process for :data:`CACHE_S` seconds (as a SHA-256 digest); the user record is still read on every
request, so removing a user or replacing a key takes effect at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import ClassVar

import redis

from caimx.jobs import DEFAULT_PREFIX

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
KDF = f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}"
CACHE_S = 300.0
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEY_PATTERN = re.compile(r"^caimx_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})$")


class UserError(ValueError):
    """A user name that is invalid, taken or unknown."""


@dataclass(frozen=True)
class UserLimits:
    """A user's own limits; ``None`` means the service-wide setting, 0 means no limit."""

    active_jobs: int | None = None
    upload_bytes_per_day: int | None = None
    storage_bytes: int | None = None

    FIELDS: ClassVar[dict[str, str]] = {
        "active_jobs": "limit_active_jobs",
        "upload_bytes_per_day": "limit_upload_bytes_per_day",
        "storage_bytes": "limit_storage_bytes",
    }
    """Attribute -> field of the user's Redis hash (absent field: the setting applies)."""

    @classmethod
    def from_record(cls, raw: dict[str, str]) -> UserLimits:
        return cls(**{attr: int(raw[field]) for attr, field in cls.FIELDS.items()
                      if raw.get(field, "") != ""})  # fmt: skip


@dataclass(frozen=True)
class User:
    name: str
    admin: bool
    created_at: float
    key_id: str
    limits: UserLimits = UserLimits()


@dataclass(frozen=True)
class NewKey:
    """A freshly made key: ``key`` is shown once and then only its hash exists."""

    user: User
    key: str


def mask(key: str) -> str:
    """What a log line may show of a key: its public id, never the secret."""
    match = _KEY_PATTERN.match(key or "")
    return f"caimx_{match.group(1)}_***" if match else "***"


def user_from_record(raw: dict[str, str]) -> User | None:
    """The user in a ``{prefix}:user:{name}`` hash (``None`` for an empty one)."""
    if not raw or "name" not in raw:
        return None
    return User(raw["name"], raw.get("admin") == "1", float(raw.get("created_at") or 0),
                raw.get("key_id", ""), UserLimits.from_record(raw))  # fmt: skip


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                          maxmem=64 * 1024 * 1024, dklen=32)  # fmt: skip


class UserStore:
    """Reads and writes users and verifies API keys (see the module text)."""

    _cache: ClassVar[dict[str, tuple[str, str, float]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _pending: ClassVar[dict[str, threading.Lock]] = {}

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}:user:{name}"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:users"

    def _key_index(self, key_id: str) -> str:
        return f"{self.prefix}:apikey:{key_id}"

    def add(self, name: str, *, admin: bool = False, replace: bool = False) -> NewKey:
        """Create ``name`` with a new key (``replace``: give an existing user a new key)."""
        if not NAME_PATTERN.match(name):
            raise UserError("a user name is 1 to 64 letters, digits, '.', '_' or '-'")
        existing = self.get(name)
        if existing is not None and not replace:
            raise UserError(f"user {name!r} exists; use --replace to give it a new key")
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        now = time.time()
        record = {"name": name, "admin": "1" if admin else "0", "created_at": repr(now),
                  "key_id": key_id, "salt": salt.hex(), "hash": _hash(secret, salt).hex(),
                  "kdf": KDF}  # fmt: skip
        with self.client.pipeline() as pipe:
            if existing is not None:
                pipe.delete(self._key_index(existing.key_id))
            pipe.hset(self.key(name), mapping=record)
            pipe.sadd(self.index_key, name)
            pipe.set(self._key_index(key_id), name)
            pipe.execute()
        return NewKey(User(name, admin, now, key_id), f"caimx_{key_id}_{secret}")

    def get(self, name: str) -> User | None:
        return user_from_record(self.client.hgetall(self.key(name)))

    def list(self) -> list[User]:
        users = (self.get(name) for name in sorted(self.client.smembers(self.index_key)))
        return [u for u in users if u is not None]

    def remove(self, name: str) -> None:
        user = self.get(name)
        if user is None:
            raise UserError(f"there is no user {name!r}")
        with self.client.pipeline() as pipe:
            pipe.delete(self.key(name), self._key_index(user.key_id))
            pipe.srem(self.index_key, name)
            pipe.execute()

    def set_limits(self, name: str, **limits: int | None) -> User:
        """Set ``name``'s own limits (keyword: a :class:`UserLimits` attribute; ``None`` goes
        back to the service-wide setting, 0 is no limit). Takes effect on the next request."""
        unknown = set(limits) - set(UserLimits.FIELDS)
        if unknown:
            raise UserError(f"unknown limits: {', '.join(sorted(unknown))}")
        if any(value is not None and value < 0 for value in limits.values()):
            raise UserError("a limit is 0 (none) or more")
        if self.get(name) is None:
            raise UserError(f"there is no user {name!r}")
        setting = {UserLimits.FIELDS[k]: str(v) for k, v in limits.items() if v is not None}
        clearing = [UserLimits.FIELDS[k] for k, v in limits.items() if v is None]
        with self.client.pipeline() as pipe:
            if setting:
                pipe.hset(self.key(name), mapping=setting)
            if clearing:
                pipe.hdel(self.key(name), *clearing)
            pipe.execute()
        user = self.get(name)
        assert user is not None
        return user

    def verify(self, key: str) -> User | None:
        """The user whose key this is, or ``None`` (unknown, removed or replaced key)."""
        match = _KEY_PATTERN.match(key or "")
        if not match:
            return None
        key_id, secret = match.groups()
        cached = self.recently_verified(key)
        if cached is None:
            # Many requests with a new key at once (a client starting 100 pollers) run one scrypt;
            # the others wait for it and find the key verified.
            digest = hashlib.sha256(key.encode()).hexdigest()
            with self._lock:
                pending = self._pending.setdefault(digest, threading.Lock())
            with pending:
                cached = self.recently_verified(key)
                if cached is None:
                    try:
                        return self._verify_slowly(key, key_id, secret)
                    finally:
                        with self._lock:
                            self._pending.pop(digest, None)
        user = self.get(cached[0])
        return user if user is not None and user.key_id == cached[1] else None

    def _verify_slowly(self, key: str, key_id: str, secret: str) -> User | None:
        """Look the key up and check its secret with scrypt; remember it when it is right."""
        name = self.client.get(self._key_index(key_id))
        if not name:
            return None
        raw = self.client.hgetall(self.key(name))
        if not raw or raw.get("key_id") != key_id:
            return None
        expected = bytes.fromhex(raw["hash"])
        if not hmac.compare_digest(_hash(secret, bytes.fromhex(raw["salt"])), expected):
            return None
        digest = hashlib.sha256(key.encode()).hexdigest()
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (name, key_id, time.monotonic() + CACHE_S)
        return self.get(name)

    @classmethod
    def recently_verified(cls, key: str) -> tuple[str, str] | None:
        """``(user name, key id)`` when this process verified ``key`` in the last
        :data:`CACHE_S` seconds; the caller must still check the user record (it may be gone or
        have a new key). No I/O, so the API can do the record read with its asyncio client."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        with cls._lock:
            cached = cls._cache.get(digest)
        if cached is None or cached[2] <= time.monotonic():
            return None
        return cached[0], cached[1]
