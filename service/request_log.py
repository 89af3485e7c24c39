"""One log record per API request, carrying the job id when the path names a job.

A plain ASGI middleware rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware``
runs every request through an extra task and memory stream, which costs more than a status request
itself.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from caimx.logging_config import job_context

log = logging.getLogger("caimx.access")
JOB_PATH = re.compile(r"^/v1/jobs/([0-9a-fA-F-]{8,64})(?:/|$)")


class RequestLogMiddleware:
    """Log method, path, status and duration; INFO for changes and errors, DEBUG for reads."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        match = JOB_PATH.match(path)
        status = 500  # what the client gets when the app raises before answering
        start = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with job_context(match.group(1) if match else None):
            try:
                await self.app(scope, receive, send_and_note)
            finally:
                changed = method not in ("GET", "HEAD") or status >= 400
                level = logging.INFO if changed else logging.DEBUG
                if log.isEnabledFor(level):
                    ms = round(1000 * (time.perf_counter() - start), 1)
                    log.log(level, "%s %s %d", method, path, status,
                            extra={"method": method, "path": path, "status": status, "ms": ms})
