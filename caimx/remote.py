"""Which fsspec URLs a job may name (``source.url``), and the fsspec options of each protocol.

Used by the service before a job exists and again by the worker before it opens the URL, so a
record written any other way cannot make a worker read elsewhere. A URL is allowed when it starts
with one of ``Settings.remote_allowed_prefixes`` on a path-segment boundary (``s3://lab/rigs``
allows ``s3://lab/rigs/a.tif``, not ``s3://lab/rigs-old/a.tif``). Refused:

- :class:`RemoteURLForbidden` (403): no prefixes configured; outside every prefix; ``..`` as a
  path segment; local or chained fsspec protocols (``file://``, ``memory://``, ``a::b``);
- :class:`RemoteURLInvalid` (422): not ``scheme://...``; user name or password in the URL
  (credentials come from the environment, never from requests, so they are never stored or
  logged); a query string or fragment; percent escapes, backslashes, NUL bytes or spaces.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ESCAPES = re.compile(r"%[0-9a-fA-F]{2}")
LOCAL_PROTOCOLS = frozenset({"file", "local", "memory", "reference", "dir", "blockcache",
                             "filecache", "simplecache", "cached", "zip", "tar"})  # fmt: skip


class RemoteURLForbidden(ValueError):
    """The URL is not one this service may read (403)."""


class RemoteURLInvalid(ValueError):
    """The URL is malformed or carries what it must not (422)."""


def protocol(url: str) -> str:
    found = _SCHEME.match(url)
    return found.group(1).lower() if found else ""


def is_url(text: object) -> bool:
    """An fsspec URL (``s3://...``, ``https://...``) rather than a local path."""
    return isinstance(text, str) and bool(protocol(text))


def canonical(url: str) -> str:
    """Lower-case protocol and host, so prefixes compare as the servers would."""
    scheme = protocol(url)
    rest = url.split("://", 1)[1] if "://" in url else url
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.lower()}{slash}{path}"


def check_url(url: str, prefixes: list[str]) -> str:
    """``url`` in canonical form if a job may read it; else raise (see the module text)."""
    if not prefixes:
        raise RemoteURLForbidden(
            "this service reads no URLs (CAIMX_REMOTE_ALLOWED_PREFIXES is empty); upload the "
            "movie or name it on shared storage")
    scheme = protocol(url)
    if not scheme:
        raise RemoteURLInvalid("a URL looks like s3://bucket/key.tif or https://host/movie.tif")
    if "::" in url or scheme in LOCAL_PROTOCOLS:
        raise RemoteURLForbidden(f"{scheme}:// URLs (and chained URLs) are not read from requests")
    if any(c in url for c in ("\x00", "\\", " ")) or _ESCAPES.search(url):
        raise RemoteURLInvalid("the URL contains a NUL byte, a backslash, a space or a %-escape; "
                               "send it as plain text")  # fmt: skip
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise RemoteURLInvalid("the URL carries a user name or password; this service reads with "
                               "its own credentials")  # fmt: skip
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise RemoteURLInvalid(
            "the URL has a query string or fragment; name the object itself (signed URLs are not "
            "accepted: they carry credentials)")
    if ".." in parts.path.split("/") or ".." in parts.netloc.split("/"):
        raise RemoteURLForbidden("the URL may not contain '..'")
    wanted = canonical(url)
    for prefix in prefixes:
        allowed = canonical(prefix)
        boundary = allowed if allowed.endswith("/") else allowed + "/"
        if wanted == allowed.rstrip("/") or wanted.startswith(boundary):
            return wanted
    raise RemoteURLForbidden(f"{url!r} is outside the URLs this service may read")


def storage_options(url: str, options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The fsspec options configured for ``url``'s protocol (``s3a`` uses ``s3``'s)."""
    scheme = protocol(url)
    found = options.get(scheme)
    if found is None and scheme == "s3a":
        found = options.get("s3")
    return dict(found or {})
