"""Movies behind fsspec URLs (``s3://``, ``gs://``, ``https://``...), read lazily by ranges.

Which URLs may be opened is decided by the caller (the service checks its allowed prefixes);
here a URL is opened with fsspec and the ``storage_options`` given (endpoint, region: never put
credentials there, the protocol's library finds them in the environment). Nothing is downloaded
as a whole:

- a TIFF (also BigTIFF, ImageJ, ScanImage) is read by tifffile from an fsspec file: the header and
  the pages asked for, in blocks of :data:`BLOCK` bytes (a few blocks are cached);
- HDF5 and NWB files are read by h5py from an fsspec file the same way;
- a ``.npy`` file: its header, then the byte range of the frames asked for;
- a Zarr store (a "folder" URL with ``zarr.json``/``.zarray``/``.zgroup``) through zarr's
  ``FsspecStore``, chunk by chunk.

Folders of TIFF files and Scanbox recordings (two files) cannot be read from a URL. Protocols
need their fsspec package: ``s3fs`` for ``s3://`` (``pip install caimx[remote]``), ``gcsfs`` for
``gs://``; ``http(s)://`` works with caimx alone (aiohttp).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from model.io.base import MovieReader
from model.io.errors import MovieFormatError
from model.io.formats import format_of_head, make_reader

BLOCK = 4 * 1024 * 1024
"""Bytes fetched per range request of a remote file."""
CACHED_BLOCKS = 16
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class RemoteSourceError(MovieFormatError):
    """The URL cannot be read: no such object, access refused, or its protocol's package missing.

    ``reason`` is ``missing``, ``forbidden`` or ``unavailable``.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def is_url(text: object) -> bool:
    """``scheme://...`` (fsspec URL), not a local path."""
    return isinstance(text, str) and bool(_SCHEME.match(text))


def _filesystem(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    scheme = url.split("://", 1)[0].lower()
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:
        extra = " (pip install 'caimx[remote]')" if scheme in ("s3", "s3a") else ""
        raise RemoteSourceError(
            f"this service cannot read {scheme}:// URLs: the package {exc.name or 'for it'} is "
            f"not installed{extra}", reason="unavailable") from exc  # fmt: skip
    except ValueError as exc:
        raise RemoteSourceError(f"{scheme}:// is not a protocol caimx can read ({exc})",
                                reason="unavailable") from exc  # fmt: skip


def _name(url: str) -> Path:
    """A ``Path`` that names the movie in messages (``.name``) and exists nowhere locally."""
    return Path(url)


def _is_zarr(fs: Any, path: str) -> bool:
    base = path.rstrip("/")
    return any(fs.exists(f"{base}/{marker}") for marker in ZARR_MARKERS)


def remote_info(url: str, *, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``size`` (bytes; for a Zarr store 0) and ``kind`` (``file`` or ``zarr``) of a URL.

    Raises
    ------
    RemoteSourceError
        No such object (``missing``), access refused (``forbidden``), protocol unavailable.
    """
    fs, path = _filesystem(url, storage_options)
    try:
        if (path.rstrip("/").endswith(".zarr") or url.endswith("/")) and _is_zarr(fs, path):
            return {"size": 0, "kind": "zarr"}
        info = fs.info(path)
        if info.get("type") == "directory":
            if _is_zarr(fs, path):
                return {"size": 0, "kind": "zarr"}
            raise MovieFormatError(
                f"{url!r} is a folder; from a URL caimx reads single movie files and Zarr stores "
                "(upload a folder of TIFF files as a .zip)")  # fmt: skip
        return {"size": int(info.get("size") or 0), "kind": "file"}
    except FileNotFoundError as exc:
        raise RemoteSourceError(f"there is no {url!r}", reason="missing") from exc
    except PermissionError as exc:
        raise RemoteSourceError(f"this service may not read {url!r} ({exc})",
                                reason="forbidden") from exc  # fmt: skip
    except OSError as exc:
        raise RemoteSourceError(f"{url!r} could not be reached ({exc})",
                                reason="unavailable") from exc  # fmt: skip


def open_url(url: str, *, storage_options: dict[str, Any] | None = None,
             **options: Any) -> MovieReader:  # fmt: skip
    """Open the movie at ``url`` lazily (see the module text); ``options`` as for ``open_movie``.

    Raises
    ------
    RemoteSourceError, MovieFormatError
    """
    fs, path = _filesystem(url, storage_options)
    kind = remote_info(url, storage_options=storage_options)["kind"]
    name = _name(url)
    if kind == "zarr":
        from zarr.storage import FsspecStore

        store = FsspecStore.from_url(url, storage_options=storage_options, read_only=True)
        reader = make_reader("zarr", name, options, store=store)
        reader.url = url
        return reader
    try:
        handle = fs.open(path, "rb", block_size=BLOCK, cache_type="blockcache",
                         cache_options={"maxblocks": CACHED_BLOCKS})  # fmt: skip
    except (FileNotFoundError, PermissionError, OSError) as exc:
        raise RemoteSourceError(f"{url!r} could not be opened ({exc})",
                                reason="unavailable") from exc  # fmt: skip
    try:
        head = handle.read(16)
        handle.seek(0)
        reader = _reader(url, name, head, handle, options)
        reader.url = url
        return reader
    except BaseException:
        handle.close()
        raise


def _reader(url: str, name: Path, head: bytes, handle: Any,
            options: dict[str, Any]) -> MovieReader:  # fmt: skip
    if not head:
        raise MovieFormatError(f"{name.name!r} is empty (0 bytes)")
    kind = format_of_head(head, handle)
    if kind is not None:
        return make_reader(kind, name, options, handle=handle)
    suffix = PurePosixPath(url).suffix.lower()
    hint = " (a Scanbox recording is two files: reference it on shared storage)" if (
        suffix in (".sbx", ".mat")) else ""  # fmt: skip
    raise MovieFormatError(
        f"{name.name!r} is not a movie caimx can read from a URL: expected a TIFF, HDF5, NWB, "
        f"a NumPy .npy file or a Zarr store{hint}"
    )
