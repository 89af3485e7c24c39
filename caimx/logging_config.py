"""Logging for every caimx process: one line per record, plain text or JSON, with the job id.

``configure_logging(settings)`` installs one handler on the root logger (idempotent, and it leaves
other handlers alone) and routes uvicorn's loggers through it. With ``CAIMX_LOG_FORMAT=json`` each
line is a JSON object::

    {"ts": "2026-11-25T22:40:01.123Z", "level": "INFO", "logger": "worker.runner",
     "msg": "job 5f0c... canceled", "process": "worker", "job_id": "5f0c...", ...}

The job id comes from ``extra={"job_id": ...}`` or from :func:`job_context` (a context variable),
which the worker sets around each task and the API around each ``/v1/jobs/{id}...`` request.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from caimx.settings import Settings

current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "caimx_job_id", default=None)
_HANDLER_MARK = "_caimx_handler"
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_OWN = {"process_name", "job_id", "job_suffix"}
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


@contextlib.contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    """Within this block every log record carries ``job_id``."""
    token = current_job_id.set(job_id)
    try:
        yield
    finally:
        current_job_id.reset(token)


class JobIdFilter(logging.Filter):
    """Adds ``record.job_id`` (from ``extra`` or the context) and ``record.process_name``."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = current_job_id.get()
        record.process_name = self.process
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra`` fields are kept as keys."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        payload: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "process": getattr(record, "process_name", None),
            "pid": record.process,
        }
        if getattr(record, "job_id", None):
            payload["job_id"] = record.job_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in payload and key not in _OWN:
                payload[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process_name)s%(job_suffix)s] %(message)s"


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        record.job_suffix = f" job={job_id}" if job_id else ""
        return super().format(record)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def make_handler(fmt: str, process: str, stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(JobIdFilter(process))
    setattr(handler, _HANDLER_MARK, True)
    return handler


def configure_logging(settings: Settings, *, process: str, stream: Any = None) -> logging.Handler:
    """Install the caimx handler on the root logger (replacing an earlier one) and return it."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    handler = make_handler(settings.log_format, process, stream)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in UVICORN_LOGGERS:  # uvicorn installs its own handlers; send them through ours
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return handler


def install_celery_job_context() -> None:
    """Set the job id context around each Celery task whose first argument is the job id."""
    from celery.signals import task_postrun, task_prerun

    tokens: dict[str, contextvars.Token] = {}

    def before(task_id: str, args: tuple = (), **_: Any) -> None:
        job_id = args[0] if args and isinstance(args[0], str) else None
        tokens[task_id] = current_job_id.set(job_id)

    def after(task_id: str, **_: Any) -> None:
        token = tokens.pop(task_id, None)
        if token is not None:
            current_job_id.reset(token)

    task_prerun.connect(before, weak=False)
    task_postrun.connect(after, weak=False)
