"""Resumable upload of a big TIFF to a live ``caimx serve``, then as much processing as time allows.

Writes a BigTIFF of ``--frames`` x ``--size`` x ``--size`` uint16 (default 4096 x 512 x 512 =
2 GiB) in a temporary folder, starts ``caimx serve`` there (private Redis, one worker, the API),
uploads the file with tus: the first ``PATCH`` is cut off halfway as if the network dropped, the
client asks ``HEAD`` for the offset and sends the rest. Meanwhile the API process's RSS is sampled
every 20 ms (psutil). Then the upload becomes a job; its progress is followed for at most
``--process-seconds``, after which an unfinished job is canceled. The worker processes' summed RSS
is sampled throughout. A finished result is opened over HTTP (Zarr v3 store) and checked: traces
one value per frame; with ``--simulate`` the movie comes from the project's simulator and the
result is scored against its ground truth (F1, trace r). Everything is deleted at the end.

    .venv/bin/python benchmarks/upload.py                  # 2 GiB, up to 10 min of processing
    .venv/bin/python benchmarks/upload.py --simulate --process-seconds 7200   # to the end, scored
    .venv/bin/python benchmarks/upload.py --frames 256 --process-seconds 60   # a quick look
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import tifffile

ROOT = Path(__file__).resolve().parents[1]
CAIMX = [sys.executable, "-c", "import sys; from caimx.cli import main; sys.exit(main())"]
TUS = {"Tus-Resumable": "1.0.0"}
BLOCK = 1 << 20


class Dropped(Exception):
    """The simulated network failure."""


def write_movie(path: Path, frames: int, size: int) -> str:
    """A BigTIFF with blinking cells on Poisson noise, page by page; returns its SHA-256."""
    rng = np.random.default_rng(0)
    noise = rng.poisson(200, (32, size, size)).astype(np.uint16)
    yy, xx = np.mgrid[:size, :size]
    cells = [((yy - y) ** 2 + (xx - x) ** 2 <= 30) for y, x in rng.uniform(8, size - 8, (80, 2))]
    on = rng.random((frames, len(cells))) < 0.05

    def pages() -> Iterator[np.ndarray]:
        for t in range(frames):
            frame = noise[t % 32].copy()
            for k in np.nonzero(on[t])[0]:
                frame[cells[k]] += 300
            yield frame

    tifffile.imwrite(path, pages(), shape=(frames, size, size), dtype=np.uint16, bigtiff=True,
                     imagej=False, metadata={"axes": "TYX"})  # fmt: skip
    return file_sha256(path)


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_simulated_movie(path: Path, frames: int, size: int) -> str:
    """A simulated movie (defaults of ``caimx simulate``, uint16) with ground truth beside it."""
    from model.simulate import SimulationParams, write_simulation

    params = SimulationParams(height=size, width=size, frames=frames, dtype="uint16", seed=7)
    write_simulation(params, path)
    return file_sha256(path)


class RssSampler(threading.Thread):
    """Peak RSS of one process, or of the sum of a process tree's matching members."""

    def __init__(self, pid: int, interval: float = 0.02, members: str | None = None) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval, self.members = interval, members
        self.peak = self._rss()
        self.stop = threading.Event()

    def _rss(self) -> int:
        if self.members is None:
            return self.process.memory_info().rss
        total = 0
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if self.members in " ".join(child.cmdline()):
                    total += child.memory_info().rss
        return total

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.peak = max(self.peak, self._rss())
            except psutil.Error:
                return


def file_body(path: Path, start: int, stop_at: int | None = None) -> Iterator[bytes]:
    with path.open("rb") as handle:
        handle.seek(start)
        sent = start
        while block := handle.read(BLOCK):
            if stop_at is not None and sent + len(block) > stop_at:
                yield block[: stop_at - sent]
                raise Dropped
            yield block
            sent += len(block)


def upload(client: httpx.Client, path: Path, sha256: str) -> tuple[str, dict]:
    size = path.stat().st_size
    meta = (f"filename {base64.b64encode(path.name.encode()).decode()},"
            f"sha256 {base64.b64encode(sha256.encode()).decode()}")  # fmt: skip
    started = time.perf_counter()
    created = client.post("/v1/uploads", headers={**TUS, "Upload-Length": str(size),
                                                  "Upload-Metadata": meta})  # fmt: skip
    created.raise_for_status()
    upload_id = created.json()["id"]
    headers = {**TUS, "Content-Type": "application/offset+octet-stream"}
    with contextlib.suppress(Dropped, httpx.HTTPError):  # the first request is cut off
        client.patch(f"/v1/uploads/{upload_id}", content=file_body(path, 0, size // 2),
                     headers={**headers, "Upload-Offset": "0"})  # fmt: skip
    time.sleep(0.5)
    offset = int(client.head(f"/v1/uploads/{upload_id}", headers=TUS).headers["Upload-Offset"])
    resumed = client.patch(f"/v1/uploads/{upload_id}", content=file_body(path, offset),
                           headers={**headers, "Upload-Offset": str(offset)})  # fmt: skip
    resumed.raise_for_status()
    seconds = time.perf_counter() - started
    state = client.get(f"/v1/uploads/{upload_id}").json()
    assert state["state"] == "complete" and state["sha256"] == sha256, state
    return upload_id, {"bytes": size, "seconds": round(seconds, 2),
                       "mb_per_s": round(size / 1e6 / seconds, 1), "resumed_at": offset}


def follow(client: httpx.Client, job_id: str, limit_s: float) -> dict:
    started = time.perf_counter()
    first_chunk_s = None
    job = client.get(f"/v1/jobs/{job_id}").json()
    while time.perf_counter() - started < limit_s:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if first_chunk_s is None and job["progress"]["chunks_done"] >= 1:
            first_chunk_s = round(time.perf_counter() - started, 1)
        if job["state"] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(5)
    elapsed = round(time.perf_counter() - started, 1)
    finished = job["state"] == "succeeded"
    if job["state"] in ("queued", "running"):
        job = client.post(f"/v1/jobs/{job_id}:cancel").json()
    return {"state_at_end": job["state"], "finished": finished, "seconds_followed": elapsed,
            "first_chunk_s": first_chunk_s, "progress": job["progress"],
            "timings": job["timings"], "error": job["error"]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=4096)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--process-seconds", type=float, default=600)
    parser.add_argument("--tiles-per-chunk", type=int, default=None,
                        help="tiles per chunk task (default: the service's, a whole window)")
    parser.add_argument("--simulate", action="store_true",
                        help="simulated movie with ground truth (scored at the end)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="caimx-upload-bench-"))
    serve = None
    try:
        movie = folder / "mouse12_plane1.tif"
        t0 = time.perf_counter()
        writer = write_simulated_movie if args.simulate else write_movie
        sha256 = writer(movie, args.frames, args.size)
        print(f"wrote {movie.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s",
              flush=True)  # fmt: skip
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAIMX_")}
        env.update(CAIMX_DATA_DIR=str(folder / "data"), CAIMX_PORT=str(port),
                   TF_CPP_MIN_LOG_LEVEL="2", CAIMX_MAX_UPLOAD_BYTES=str(64 * 1024**3))
        if args.tiles_per_chunk:
            env["CAIMX_TILES_PER_CHUNK"] = str(args.tiles_per_chunk)
        log = (folder / "serve.log").open("wb")
        serve = subprocess.Popen([*CAIMX, "serve"], cwd=ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=600) as client:
            api_pid = _wait_ready(client, serve)
            sampler = RssSampler(api_pid)
            before = sampler.peak
            sampler.start()
            upload_id, figures = upload(client, movie, sha256)
            created = client.post("/v1/jobs", json={"source": {"upload_id": upload_id}})
            created.raise_for_status()
            sampler.stop.set()
            sampler.join()
            job = created.json()
            workers = RssSampler(serve.pid, interval=1.0, members="worker")
            workers.start()
            processing = follow(client, job["id"], args.process_seconds)
            workers.stop.set()
            workers.join()
            processing["worker_rss_peak_mb"] = round(workers.peak / 2**20)
            if processing["finished"]:
                processing["result"] = check_result(f"{base}/v1/jobs/{job['id']}/zarr",
                                                    args.frames, movie if args.simulate else None)
        report = {
            "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                       f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                     capture_output=True, text=True).stdout.strip(),
            "movie": {"shape": job["movie"]["shape"], "dtype": job["movie"]["dtype"]},
            "upload": figures,
            "api_rss_mb": {"before": round(before / 2**20), "peak": round(sampler.peak / 2**20)},
            "processing": processing,
        }  # fmt: skip
        print(json.dumps(report, indent=2))
        return 0
    finally:
        if serve is not None and serve.poll() is None:
            serve.send_signal(signal.SIGINT)
            try:
                serve.wait(timeout=60)
            except subprocess.TimeoutExpired:
                serve.kill()
        shutil.rmtree(folder, ignore_errors=True)


def check_result(url: str, frames: int, simulated: Path | None) -> dict:
    """Open the result over HTTP as a Zarr store; score it when the movie was simulated."""
    from model.evaluate import evaluate
    from model.results import read_result

    result = read_result(url)
    if result.traces.shape[1] != frames:
        raise AssertionError(f"traces cover {result.traces.shape[1]} of {frames} frames")
    report: dict = {"neurons": int(result.footprints.shape[0]),
                    "trace_frames": int(result.traces.shape[1])}
    if simulated is not None:
        from model.simulate import load_ground_truth

        truth = load_ground_truth(simulated)
        for name, traces in (("network", result.traces), ("fluorescence", result.corrected)):
            if traces is None:
                continue
            score = evaluate(result.footprints, truth.masks, found_traces=traces,
                             true_traces=truth.traces)
            report[f"score_{name}_traces"] = {
                k: round(v, 3) if isinstance(v, float) else v
                for k, v in score.to_dict().items() if k != "matches"}
    return report


def _free_port() -> int:
    from caimx.embedded import free_port

    return free_port()


def _wait_ready(client: httpx.Client, serve: subprocess.Popen) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            raise RuntimeError("caimx serve exited")
        try:
            if client.get("/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        raise RuntimeError("caimx serve did not become ready")
    for child in psutil.Process(serve.pid).children(recursive=True):
        if "uvicorn" in " ".join(child.cmdline()):
            return child.pid
    raise RuntimeError("no API process found")


if __name__ == "__main__":
    sys.exit(main())
