"""One log record per API request, carrying the job id when the path names a job."""

from __future__ import annotations

import logging
import re
import time

from fastapi import FastAPI, Request

from caimx.logging_config import job_context

log = logging.getLogger("caimx.access")
JOB_PATH = re.compile(r"^/v1/jobs/([0-9a-fA-F-]{8,64})(?:/|$)")


def install_request_logging(app: FastAPI) -> None:
    """Log method, path, status and duration; INFO for changes and errors, DEBUG for reads."""

    @app.middleware("http")
    async def log_request(request: Request, call_next):
        match = JOB_PATH.match(request.url.path)
        with job_context(match.group(1) if match else None):
            start = time.perf_counter()
            response = await call_next(request)
            level = (logging.INFO if request.method not in ("GET", "HEAD")
                     or response.status_code >= 400 else logging.DEBUG)  # fmt: skip
            log.log(level, "%s %s %d", request.method, request.url.path, response.status_code,
                    extra={"method": request.method, "path": request.url.path,
                           "status": response.status_code,
                           "ms": round(1000 * (time.perf_counter() - start), 1)})  # fmt: skip
            return response
