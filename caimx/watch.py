"""Watch a rig's output folder and submit every finished movie once, across restarts.

A file counts as finished when it matches a pattern, is not empty, and has not changed for
``settle_s`` seconds (acquisition software writes a movie continuously until it closes it). What
was submitted is kept in a JSON state file (default ``<folder>/.caimx-submitted.json``),
written atomically at each step. A resumable upload's id is recorded as soon as it exists, so an
interrupted upload resumes where it stopped. The job request carries an ``Idempotency-Key`` made
from the file's path, size and modification time, so if the watcher dies between the request and
the state file update, the service returns the same job again instead of making a second one.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caimx.client import ApiError, Client

DEFAULT_PATTERNS = ("*.tif", "*.tiff", "*.npy", "*.h5", "*.hdf5", "*.nwb", "*.sbx")
STATE_NAME = ".caimx-submitted.json"


@dataclass
class FolderWatcher:
    """Submits finished movies under ``folder`` (recursively) to ``client``."""

    folder: Path
    client: Client
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    settle_s: float = 30.0
    state_path: Path | None = None
    params: dict[str, Any] = field(default_factory=dict)
    submitted: dict[str, dict[str, Any]] = field(init=False)
    _tus: bool | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).resolve()
        self.state_path = Path(self.state_path or self.folder / STATE_NAME)
        self.submitted = {}
        if self.state_path.is_file():
            self.submitted = json.loads(self.state_path.read_text(encoding="utf-8"))

    def finished_movies(self, *, now: float | None = None) -> list[Path]:
        """Movies not yet submitted that have been still for ``settle_s`` seconds."""
        now = time.time() if now is None else now
        found = []
        for path in sorted(self.folder.rglob("*")):
            name = path.relative_to(self.folder).as_posix()
            done = self.submitted.get(name, {}).get("state") not in (None, "uploading")
            if (done or path.name.startswith(".") or not path.is_file()
                    or not any(fnmatch.fnmatch(path.name.lower(), p) for p in self.patterns)):
                continue  # fmt: skip
            stat = path.stat()
            if stat.st_size > 0 and now - stat.st_mtime >= self.settle_s:
                found.append(path)
        return found

    def run_once(self, *, now: float | None = None) -> list[dict[str, Any]]:
        """Submit what is finished now; returns the jobs made (or found again)."""
        jobs = []
        for path in self.finished_movies(now=now):
            stat = path.stat()
            name = path.relative_to(self.folder).as_posix()
            key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
            try:
                job = self._submit(path, name, idempotency_key=f"watch-{key[:40]}")
            except ApiError as exc:  # a file the service refuses is recorded, not retried forever
                job = {"id": None, "state": "refused", "error": str(exc)}
            self.submitted[name] = {"job": job["id"], "state": job["state"],
                                    "upload": self.submitted.get(name, {}).get("upload"),
                                    "error": job.get("error"), "size": stat.st_size,
                                    "submitted_at": time.time()}  # fmt: skip
            self._save()
            jobs.append({**job, "file": name})
        return jobs

    def _submit(self, path: Path, name: str, *, idempotency_key: str) -> dict[str, Any]:
        if self._tus is None:
            self._tus = self.client.speaks_tus()
        if not self._tus:
            return self.client.submit(path, progress=False, resumable=False,
                                      idempotency_key=idempotency_key, **self.params)

        def remember(upload_id: str) -> None:
            self.submitted[name] = {"state": "uploading", "upload": upload_id}
            self._save()

        upload_id = self.client.upload(path, progress=False, on_created=remember,
                                       upload_id=self.submitted.get(name, {}).get("upload"))
        return self.client.submit_upload(upload_id, idempotency_key=idempotency_key,
                                         **self.params)  # fmt: skip

    def run_forever(self, *, poll_s: float = 10.0) -> None:  # pragma: no cover - loops until ^C
        print(f"watching {self.folder} (state in {self.state_path}); Ctrl-C stops",
              file=sys.stderr)  # fmt: skip
        import httpx

        while True:
            try:
                for job in self.run_once():
                    print(f"{job['file']} -> {job['id'] or job['error']}", flush=True)
            except httpx.HTTPError as exc:  # the service is away: try again at the next poll
                print(f"cannot reach the service ({exc}); retrying", file=sys.stderr)
            time.sleep(poll_s)

    def _save(self) -> None:
        assert self.state_path is not None
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.state_path.parent, delete=False,
                                         suffix=".tmp", encoding="utf-8") as handle:  # fmt: skip
            json.dump(self.submitted, handle, indent=1)
        os.replace(handle.name, self.state_path)
