"""Python client of the caimx service (httpx).

>>> from caimx.client import Client
>>> api = Client("http://caimx.lab:8000")
>>> job = api.submit("recording.tif", fps=30.0)      # resumable upload, progress bar
>>> job = api.wait(job)                               # chunks, frames/s, ETA; Ctrl-C detaches
>>> result = api.result(job)                          # the Zarr group, read lazily over HTTP
>>> traces = result["traces"][:10]                    # fetches only what it needs
>>> api.download(job, "nwb", "out/")                  # or "suite2p", "tiff", "zarr"

Requests answered 429 or 503, or lost on the way, are retried with exponential backoff (and the
server's ``Retry-After``). Errors are :class:`ApiError` carrying the server's problem details.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from caimx.remote import is_url
from model.registry import sha256_file

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = ("succeeded", "failed", "canceled")
RETRY_STATUSES = (429, 502, 503, 504)
TUS = {"Tus-Resumable": "1.0.0"}
UPLOAD_CHUNK = 16 * 1024**2
DOWNLOAD_FORMATS = ("zarr", "nwb", "suite2p", "tiff")


class ApiError(RuntimeError):
    """The service refused a request; ``problem`` is its RFC 9457 body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        detail = problem.get("detail") or problem.get("title") or "no details"
        super().__init__(f"HTTP {status}: {detail}")


def _job_id(job: str | dict) -> str:
    return job["id"] if isinstance(job, dict) else str(job)


def client_config() -> dict[str, str]:
    """``url`` and ``api_key`` from the config file, if there is one.

    The file is ``CAIMX_CLIENT_CONFIG``, else ``$XDG_CONFIG_HOME/caimx/client.toml`` (by default
    ``~/.config/caimx/client.toml``), with top-level keys ``url`` and ``api_key``.
    """
    import tomllib

    path = os.environ.get("CAIMX_CLIENT_CONFIG")
    if not path:
        base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
        path = Path(base) / "caimx" / "client.toml"
    path = Path(path)
    if not path.is_file():
        return {}
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    return {key: str(data[key]) for key in ("url", "api_key") if data.get(key)}


class Client:
    """A connection to one caimx service.

    Parameters
    ----------
    url : str, optional
        Base URL; default ``CAIMX_URL``, else ``url`` in the config file (:func:`client_config`),
        else http://127.0.0.1:8000.
    api_key : str, optional
        Sent as ``Authorization: Bearer ...`` (for a gateway in front of the service); default
        ``CAIMX_API_KEY``, else ``api_key`` in the config file.
    retries : int
        Attempts per request on 429/502/503/504 and connection errors.
    backoff_s : float
        First wait between attempts; doubled each time, at most ``max_backoff_s``.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 60,
                 retries: int = 6, backoff_s: float = 0.5, max_backoff_s: float = 30,
                 transport: httpx.BaseTransport | None = None) -> None:  # fmt: skip
        config = client_config() if url is None or api_key is None else {}
        self.url = (url or os.environ.get("CAIMX_URL") or config.get("url")
                    or DEFAULT_URL).rstrip("/")  # fmt: skip
        if api_key is None:
            api_key = os.environ.get("CAIMX_API_KEY") or config.get("api_key")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout,
                                 transport=transport, follow_redirects=True)  # fmt: skip

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- plumbing ---------------------------------------------------------------------------

    def request(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,),
        body: Callable[[], Any] | None = None, **kwargs: Any,
    ) -> httpx.Response:  # fmt: skip
        """One request with retries; ``body()`` makes a fresh request body for each attempt."""
        wait = self.backoff_s
        for attempt in range(1, self.retries + 1):
            if body is not None:
                kwargs.update(body())
            try:
                response = self.http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError,
                    httpx.WriteError, httpx.TimeoutException):  # fmt: skip
                if attempt == self.retries:
                    raise
            else:
                if response.status_code in ok:
                    return response
                if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                    raise self._error(response)
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    wait = max(wait, float(retry_after))
            time.sleep(min(wait, self.max_backoff_s))
            wait *= 2
        raise AssertionError("unreachable")

    @staticmethod
    def _error(response: httpx.Response) -> ApiError:
        try:
            problem = response.json()
        except ValueError:
            problem = {"title": response.reason_phrase, "detail": response.text[:500]}
        return ApiError(response.status_code, problem if isinstance(problem, dict) else {})

    # ---- jobs ---------------------------------------------------------------------------------

    def submit(self, movie: str | os.PathLike | Any, *, resumable: bool | None = None,
               progress: bool = True, idempotency_key: str | None = None, shared: bool = False,
               plane: int | None = None, channel: int | None = None, dataset: str | None = None,
               **params: Any) -> dict:  # fmt: skip
        """Queue a movie and return the job (a dict, as ``GET /v1/jobs/{id}``).

        ``movie`` is one of:

        - a local file, uploaded (resumably when the server speaks tus);
        - a ``(T, H, W)`` array, sent as ``.npy``;
        - an fsspec URL (``"s3://lab-rigs/mouse12.tif"``, ``"https://..."``), read by the service
          where it is (under its ``CAIMX_REMOTE_ALLOWED_PREFIXES``); nothing is uploaded;
        - with ``shared=True``, a path on the service's shared storage (relative to one of its
          ``CAIMX_ALLOWED_ROOTS``, or absolute inside one); nothing is uploaded.

        ``plane``, ``channel`` (ScanImage, hyperstacks, Scanbox; from 0) and ``dataset`` (HDF5,
        NWB, Zarr group) say how to read the movie. ``params`` are job parameters (``model``,
        ``fps``, ``tile``, ``outputs`` ...).
        """
        options = {key: value for key, value in (
            ("plane", plane), ("channel", channel), ("dataset", dataset)) if value is not None}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if is_url(movie) or shared:
            where = {"url": movie} if is_url(movie) else {"path": os.fspath(movie)}
            return self.submit_source({**where, **options}, idempotency_key=idempotency_key,
                                      **params)  # fmt: skip
        if isinstance(movie, str | os.PathLike):
            path = Path(movie)
            if not path.is_file():
                raise FileNotFoundError(f"no movie at {path}")
            if resumable is None:
                resumable = self._speaks_tus()
            if resumable:
                upload_id = self.upload(path, progress=progress)
                return self.submit_source({"upload_id": upload_id, **options},
                                          idempotency_key=idempotency_key, **params)
            name, opener = path.name, path.open
        else:
            import numpy as np

            buffer = io.BytesIO()
            np.save(buffer, np.asarray(movie))
            data = buffer.getvalue()
            name, opener = "array.npy", lambda _mode: io.BytesIO(data)
        fields = {"params": json.dumps(params)} if params else {}
        if options:
            fields["source"] = json.dumps(options)

        def form() -> dict:
            return {"files": {"file": (name, opener("rb"))}, "data": fields}

        return self.request("POST", "/v1/jobs", ok=(200, 202), headers=headers,
                            body=form).json()  # fmt: skip

    def submit_upload(self, upload_id: str, *, idempotency_key: str | None = None,
                      **params: Any) -> dict:  # fmt: skip
        """Queue a job on a finished resumable upload (see :meth:`upload`)."""
        return self.submit_source({"upload_id": upload_id}, idempotency_key=idempotency_key,
                                  **params)  # fmt: skip

    def submit_source(self, source: dict[str, Any], *, idempotency_key: str | None = None,
                      **params: Any) -> dict:  # fmt: skip
        """Queue a job on ``source`` as ``POST /v1/jobs`` takes it: one of ``upload_id``,
        ``path`` (shared storage) and ``url``, with reading options (``plane``, ``channel``,
        ``dataset``)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.request("POST", "/v1/jobs", ok=(200, 202), headers=headers, json={
            "source": source, "params": params}).json()  # fmt: skip

    def speaks_tus(self) -> bool:
        """Whether the service takes resumable (tus) uploads."""
        return self._speaks_tus()

    def _speaks_tus(self) -> bool:
        try:
            response = self.http.request("OPTIONS", "/v1/uploads")
        except httpx.HTTPError:
            return False
        return response.status_code == 204 and "Tus-Version" in response.headers

    def upload(self, path: str | os.PathLike, *, progress: bool = True,
               upload_id: str | None = None, chunk_bytes: int = UPLOAD_CHUNK,
               on_created: Callable[[str], None] | None = None) -> str:  # fmt: skip
        """Upload ``path`` with tus (resuming ``upload_id`` if given); returns the upload id.

        ``on_created(upload_id)`` is called as soon as a new upload exists, so a caller can
        remember it and resume after a crash.
        """
        path = Path(path)
        size = path.stat().st_size
        if upload_id is None:
            meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                            for k, v in (("filename", path.name), ("sha256", sha256_file(path))))
            created = self.request("POST", "/v1/uploads", ok=(201,), headers={
                **TUS, "Upload-Length": str(size), "Upload-Metadata": meta})  # fmt: skip
            upload_id = created.json()["id"]
            if on_created is not None:
                on_created(upload_id)
        offset = int(self.request("HEAD", f"/v1/uploads/{upload_id}",
                                  headers=TUS).headers["Upload-Offset"])  # fmt: skip
        bar = _bar(total=size, unit="B", unit_scale=True, desc=f"upload {path.name}",
                   disable=not progress, initial=offset)  # fmt: skip
        with bar, path.open("rb") as handle:
            while offset < size:
                handle.seek(offset)
                data = handle.read(chunk_bytes)
                try:
                    self.request("PATCH", f"/v1/uploads/{upload_id}", ok=(204,), content=data,
                                 headers={**TUS, "Upload-Offset": str(offset),
                                          "Content-Type": "application/offset+octet-stream"})
                except (ApiError, httpx.HTTPError):  # ask where the server is, then go on
                    head = self.request("HEAD", f"/v1/uploads/{upload_id}", headers=TUS)
                    if int(head.headers["Upload-Offset"]) == offset:
                        raise
                offset = int(self.request("HEAD", f"/v1/uploads/{upload_id}",
                                          headers=TUS).headers["Upload-Offset"])  # fmt: skip
                bar.update(offset - bar.n)
        return upload_id

    def status(self, job: str | dict) -> dict:
        return self.request("GET", f"/v1/jobs/{_job_id(job)}").json()

    def cancel(self, job: str | dict) -> dict:
        return self.request("POST", f"/v1/jobs/{_job_id(job)}/cancel").json()

    def list(self, *, limit: int = 50, state: str | None = None) -> list[dict]:
        """The newest ``limit`` jobs (following the server's pages)."""
        jobs: list[dict] = []
        params: dict[str, Any] = {"limit": min(limit, 500)}
        if state:
            params["state"] = state
        while len(jobs) < limit:
            page = self.request("GET", "/v1/jobs", params=params).json()
            jobs += page["jobs"]
            if not page.get("next_cursor"):
                break
            params["cursor"] = page["next_cursor"]
        return jobs[:limit]

    def wait(self, job: str | dict, *, progress: bool = True, poll_s: float = 2.0,
             timeout_s: float | None = None) -> dict:  # fmt: skip
        """Poll until the job is finished; returns it. Ctrl-C stops waiting, not the job."""
        job_id = _job_id(job)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        bar = _bar(total=None, unit="chunk", desc=f"job {job_id[:8]}", disable=not progress)
        try:
            with bar:
                while True:
                    current = self.status(job_id)
                    _show(bar, current)
                    if current["state"] in TERMINAL:
                        return current
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"job {job_id} is still {current['state']}")
                    time.sleep(poll_s)
        except KeyboardInterrupt:
            print(f"\nStopped waiting; job {job_id} keeps running. Reattach with\n"
                  f"  caimx status {job_id} --wait      or\n"
                  f"  Client({self.url!r}).wait({job_id!r})", file=sys.stderr)
            raise

    # ---- results ------------------------------------------------------------------------------

    def result(self, job: str | dict):
        """The result group, opened read-only over HTTP; arrays are fetched chunk by chunk."""
        import zarr

        info = self.request("GET", f"/v1/jobs/{_job_id(job)}/result").json()
        url = info.get("url") or f"{self.url}/v1/jobs/{_job_id(job)}/zarr"
        if url.startswith("/"):
            url = self.url + url
        return zarr.open_group(url, mode="r",
                               storage_options={"headers": self.headers} if self.headers else None)

    def download(self, job: str | dict, format: str, dest: str | os.PathLike, *,
                 progress: bool = True) -> Path:  # fmt: skip
        """Save the result as ``format`` (zarr: the result.zip) into folder ``dest``."""
        if format not in DOWNLOAD_FORMATS:
            raise ValueError(f"format must be one of {', '.join(DOWNLOAD_FORMATS)}")
        job_id = _job_id(job)
        path = (f"/v1/jobs/{job_id}/result.zip" if format == "zarr"
                else f"/v1/jobs/{job_id}/export/{format}")  # fmt: skip
        folder = Path(dest)
        folder.mkdir(parents=True, exist_ok=True)
        with self._stream(path) as response:
            name = _filename(response) or f"{job_id}-{format}"
            target = folder / name
            total = int(response.headers.get("Content-Length", 0)) or None
            partial = target.with_name(target.name + ".part")
            with _bar(total=total, unit="B", unit_scale=True, desc=name,
                      disable=not progress) as bar, partial.open("wb") as out:  # fmt: skip
                for block in response.iter_bytes():
                    out.write(block)
                    bar.update(len(block))
        partial.replace(target)
        return target

    def _stream(self, path: str):
        wait = self.backoff_s
        for attempt in range(1, self.retries + 1):
            request = self.http.build_request("GET", path)
            response = self.http.send(request, stream=True)
            if response.status_code == 200:
                return _Closing(response)
            response.read()
            response.close()
            if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                raise self._error(response)
            time.sleep(min(wait, self.max_backoff_s))
            wait *= 2
        raise AssertionError("unreachable")


class _Closing:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    def __enter__(self) -> httpx.Response:
        return self.response

    def __exit__(self, *_: object) -> None:
        self.response.close()


def _filename(response: httpx.Response) -> str | None:
    disposition = response.headers.get("Content-Disposition", "")
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "filename" and value:
            return Path(value.strip('"')).name
    return None


def _bar(**kwargs: Any):
    from tqdm.auto import tqdm

    return tqdm(file=sys.stderr, **kwargs)


def _show(bar: Any, job: dict) -> None:
    progress = job.get("progress") or {}
    total = progress.get("chunks_total") or None
    if total and bar.total != total:
        bar.total = total
    bar.n = progress.get("chunks_done", 0)
    facts = {"state": job["state"]}
    if progress.get("frames_per_s"):
        facts["frames/s"] = f"{progress['frames_per_s']:.1f}"
    if progress.get("eta_s") is not None and job["state"] == "running":
        facts["eta"] = f"{progress['eta_s']:.0f}s"
    bar.set_postfix(facts, refresh=False)
    bar.refresh()

