"""Streaming a multipart upload straight to disk, chunk by chunk, with a size limit.

Starlette's form parser would first spool the file to a temporary file; here the request body is
fed to ``python_multipart`` as it arrives and the file part is written directly to its final
place, hashed on the way, and cut off as soon as it exceeds the limit.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import BadUploadError, UnsupportedMediaError, UploadTooLargeError

MAX_FIELD_BYTES = 64 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class UploadedFile:
    path: Path
    filename: str
    size: int
    sha256: str


@dataclass
class StreamedForm:
    files: dict[str, UploadedFile] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)


def safe_filename(name: str | None) -> str:
    """A file name safe to use on disk: no folders, no odd characters, never empty."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _SAFE.sub("_", base).strip("._")[:200]
    return cleaned or "movie"


class _Sink:
    """Collects the parts of one multipart body as the parser reports them."""

    def __init__(self, dest_dir: Path, max_bytes: int, file_fields: set[str]) -> None:
        self.dest_dir, self.max_bytes, self.file_fields = dest_dir, max_bytes, file_fields
        self.form = StreamedForm()
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[str, bytes] = {}
        self._name: str | None = None
        self._handle: BinaryIO | None = None
        self._upload: UploadedFile | None = None
        self._digest = hashlib.sha256()
        self._value = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._name, self._value = {}, None, bytearray()

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise BadUploadError("a form part has no name")
        self._name = name
        if b"filename" in options:
            if name not in self.file_fields:
                raise BadUploadError(f"unexpected file in form field {name!r}")
            if name in self.form.files:
                raise BadUploadError(f"more than one file in form field {name!r}")
            filename = options[b"filename"].decode("utf-8", "replace")
            path = self.dest_dir / safe_filename(filename)
            self._digest = hashlib.sha256()
            self._handle = path.open("wb")
            self._upload = UploadedFile(path=path, filename=filename, size=0, sha256="")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._handle is not None and self._upload is not None:
            self._upload.size += len(chunk)
            if self._upload.size > self.max_bytes:
                raise UploadTooLargeError(
                    f"the upload is larger than this service accepts ({self.max_bytes} bytes)",
                    max_bytes=self.max_bytes,
                )
            self._handle.write(chunk)
            self._digest.update(chunk)
        else:
            self._value += chunk
            if len(self._value) > MAX_FIELD_BYTES:
                raise BadUploadError(f"form field {self._name!r} is too long")

    def _part_end(self) -> None:
        if self._handle is not None and self._upload is not None and self._name is not None:
            self._handle.close()
            self._upload.sha256 = self._digest.hexdigest()
            self.form.files[self._name] = self._upload
            self._handle, self._upload = None, None
        elif self._name is not None:
            self.form.fields[self._name] = self._value.decode("utf-8", "replace")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


async def receive_multipart(
    request: Request, *, dest_dir: Path, max_bytes: int, file_fields: set[str]
) -> StreamedForm:
    """Parse a ``multipart/form-data`` request body, writing file parts into ``dest_dir``.

    Raises
    ------
    UnsupportedMediaError
        The request is not ``multipart/form-data``.
    UploadTooLargeError
        The request announces, or streams, more than ``max_bytes`` of file data.
    BadUploadError
        The body is not valid multipart or has unexpected parts.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaError(
            "upload the movie as multipart/form-data with the file in the form field 'file'"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MAX_FIELD_BYTES:
        raise UploadTooLargeError(
            f"the upload is larger than this service accepts ({max_bytes} bytes)",
            max_bytes=max_bytes,
        )
    sink = _Sink(dest_dir, max_bytes, file_fields)
    parser = MultipartParser(boundary, sink.callbacks())
    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except (UploadTooLargeError, BadUploadError):
        raise
    except ValueError as exc:  # python_multipart's parse errors derive from ValueError
        raise BadUploadError(f"the multipart body could not be parsed ({exc})") from exc
    finally:
        sink.close()
    return sink.form
