"""Load on a live ``caimx serve`` (loopback only): many clients poll while uploads run.

Starts ``caimx serve --no-worker`` with API keys on, in a temporary folder on a free port of
127.0.0.1, creates a user and ``--jobs`` queued jobs (small multipart movies; no worker, so they
stay queued and the CPU is the API's). Then, for ``--seconds``:

- ``--clients`` asyncio clients (httpx, one connection each) poll ``GET /v1/jobs/{id}`` and, one
  request in ``--list-every`` at random, ``GET /v1/jobs?limit=50``, waiting ``--think-ms`` (times a
  random 0.5-1.5) between requests; requests of the first ``--warmup-s`` seconds (new
  connections, the key's first check) are reported apart;
- ``--uploaders`` clients upload ``--upload-mb`` files with tus (``POST`` + ``PATCH`` in 4 MiB
  requests), one after the other, each at most ``--upload-mb-per-s`` (a rig's share of the lab
  network; by default as fast as loopback allows, which makes the uploads take most of the CPU).

Prints requests/s, p50/p99/max latency per kind and the error count (any status other than the
expected, or a transport error), as JSON too. Stops by itself; everything is deleted at the end.

    .venv/bin/python benchmarks/load.py                      # 100 clients, 30 s
    .venv/bin/python benchmarks/load.py --think-ms 0         # as fast as they can
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
import redis
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from caimx.embedded import free_port  # noqa: E402
from caimx.users import UserStore  # noqa: E402

CAIMX = [sys.executable, "-c", "import sys; from caimx.cli import main; sys.exit(main())"]
TUS = {"Tus-Resumable": "1.0.0"}
BLOCK = 4 << 20


def start_serve(folder: Path, port: int, api_workers: int) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIMX_")}
    env.update(CAIMX_DATA_DIR=str(folder / "data"), CAIMX_AUTH_ENABLED="true",
               CAIMX_MAX_ACTIVE_JOBS_PER_USER="0", PYTHONUNBUFFERED="1")  # fmt: skip
    log = folder / "serve.log"
    command = [*CAIMX, "serve", "--no-worker", "--port", str(port), "--api-workers",
               str(api_workers)]  # fmt: skip
    process = subprocess.Popen(command, env=env,
                               cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"private Redis at (redis://\S+)", log.read_text())
        try:
            up = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            up = False
        if match and up:
            return process, match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"caimx serve did not start:\n{log.read_text()[-3000:]}")


def small_movie() -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, np.random.default_rng(0).poisson(20, (32, 32, 32)).astype(np.uint16))
    return out.getvalue()


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.examples: list[str] = []
        self.slowest = []

    began = 0.0
    slowest: list[tuple[float, str, float]]
    warm_until = 0.0
    """Requests started before this (``time.monotonic()``) are reported as ``<kind> (warm-up)``:
    each client's first request opens a connection and the first use of a key runs scrypt."""

    async def timed(self, kind: str, call, expected: int) -> httpx.Response | None:
        if time.monotonic() < self.warm_until:
            kind = f"{kind} (warm-up)"
        start = time.perf_counter()
        try:
            response = await call()
        except httpx.HTTPError as exc:
            self.errors[kind] += 1
            self.examples.append(f"{kind}: {type(exc).__name__} {exc}")
            return None
        took = time.perf_counter() - start
        self.latency[kind].append(took)
        self.slowest.append((took, kind, time.monotonic() - took - self.began))
        if len(self.slowest) > 200:  # keep the 10 slowest, cheaply
            self.slowest = sorted(self.slowest, reverse=True)[:10]
        if response.status_code != expected:
            self.errors[kind] += 1
            self.examples.append(f"{kind}: {response.status_code} {response.text[:200]}")
        return response


async def poller(base: str, key: str, job_ids: list[str], stop: float, rec: Recorder,
                 think_s: float, list_every: int, seed: int) -> None:  # fmt: skip
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30,
                                 limits=httpx.Limits(max_connections=1)) as http:  # fmt: skip
        await asyncio.sleep(rng.uniform(0, max(think_s, 0.05)))  # spread the start
        while time.monotonic() < stop:
            # Random, not every n-th request, and a jittered pause: clients in lockstep would all
            # list at the same moment every n seconds, which no group of people or scripts does.
            if rng.random() < 1 / list_every:
                await rec.timed("list", lambda: http.get("/v1/jobs", params={"limit": 50}), 200)
            else:
                job = rng.choice(job_ids)
                await rec.timed("status", lambda j=job: http.get(f"/v1/jobs/{j}"), 200)
            if think_s:
                await asyncio.sleep(think_s * rng.uniform(0.5, 1.5))


async def uploader(base: str, key: str, data: bytes, stop: float, rec: Recorder,
                   rate: float) -> None:  # fmt: skip
    """Upload ``data`` again and again, at most ``rate`` bytes/s (0: as fast as it can)."""
    headers = {"Authorization": f"Bearer {key}"}
    size = len(data)
    began, sent = time.monotonic(), 0
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
        while time.monotonic() < stop:
            created = await rec.timed("upload-create", lambda: http.post(
                "/v1/uploads", headers={**TUS, "Upload-Length": str(size)}), 201)  # fmt: skip
            if created is None or created.status_code != 201:
                await asyncio.sleep(0.5)
                continue
            upload = created.json()["id"]
            for offset in range(0, size, BLOCK):
                if time.monotonic() >= stop:
                    break
                chunk = data[offset:offset + BLOCK]
                await rec.timed("upload-patch", lambda o=offset, c=chunk, u=upload: http.patch(
                    f"/v1/uploads/{u}", content=c, headers={
                        **TUS, "Upload-Offset": str(o),
                        "Content-Type": "application/offset+octet-stream"}), 204)  # fmt: skip
                rec.latency["upload-bytes"].append(len(chunk))
                sent += len(chunk)
                if rate:  # a rig's link, not loopback: wait until the bytes sent fit the rate
                    await asyncio.sleep(max(0.0, began + sent / rate - time.monotonic()))
            await http.delete(f"/v1/uploads/{upload}", headers=TUS)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


async def run(args: argparse.Namespace, base: str, key: str, job_ids: list[str]) -> dict:
    rec = Recorder()
    # made before the clock starts: generating it blocks the event loop for seconds
    data = np.random.default_rng(0).bytes(args.upload_mb << 20) if args.uploaders else b""
    start = time.monotonic()
    rec.began, rec.warm_until = start, start + args.warmup_s
    stop = start + args.seconds
    tasks = [poller(base, key, job_ids, stop, rec, args.think_ms / 1000, args.list_every, i)
             for i in range(args.clients)]  # fmt: skip
    tasks += [uploader(base, key, data, stop, rec, args.upload_mb_per_s * 1e6)
              for _ in range(args.uploaders)]  # fmt: skip
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.seconds + 120)
    elapsed = time.monotonic() - start
    report: dict = {"seconds": round(elapsed, 1), "clients": args.clients, "kinds": {},
                    "uploaders": args.uploaders, "think_ms": args.think_ms,
                    "api_workers": args.api_workers,
                    "upload_mb_per_s_limit": args.upload_mb_per_s}  # fmt: skip
    total = 0
    for kind, values in sorted(rec.latency.items()):
        if kind == "upload-bytes":
            report["upload_MB_per_s"] = round(sum(values) / elapsed / 1e6, 1)
            continue
        total += len(values)
        report["kinds"][kind] = {
            "requests": len(values), "per_s": round(len(values) / elapsed, 1),
            "p50_ms": round(1000 * statistics.median(values), 1),
            "p99_ms": round(1000 * percentile(values, 0.99), 1),
            "max_ms": round(1000 * max(values), 1), "errors": rec.errors.get(kind, 0)}  # fmt: skip
    report["requests_per_s"] = round(total / elapsed, 1)
    report["errors"] = sum(rec.errors.values())
    report["error_examples"] = rec.examples[:5]
    report["slowest"] = [{"ms": round(1000 * took), "kind": kind, "at_s": round(at, 2)}
                         for took, kind, at in sorted(rec.slowest, reverse=True)[:10]]  # fmt: skip
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--think-ms", type=float, default=250.0,
                        help="pause of each polling client between requests")
    parser.add_argument("--list-every", type=int, default=5,
                        help="one request in n (at random) lists jobs")
    parser.add_argument("--warmup-s", type=float, default=5.0,
                        help="requests of the first seconds are reported apart")
    parser.add_argument("--uploaders", type=int, default=2)
    parser.add_argument("--upload-mb", type=int, default=64)
    parser.add_argument("--upload-mb-per-s", type=float, default=0.0,
                        help="bandwidth of each uploader (e.g. 50 for two rigs sharing 1 GbE); "
                             "0: as fast as loopback allows")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=30, help="queued jobs the clients poll")
    parser.add_argument("--api-workers", type=int, default=1, help="API processes")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="caimx-load-"))
    port = free_port()
    serve, redis_url = start_serve(folder, port, args.api_workers)
    base = f"http://127.0.0.1:{port}"
    try:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        key = UserStore(client).add("load").key
        client.close()
        movie = small_movie()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"},
                          timeout=30) as http:  # fmt: skip
            job_ids = []
            for i in range(args.jobs):
                response = http.post("/v1/jobs", files={"file": (f"m{i}.tif", movie)})
                response.raise_for_status()
                job_ids.append(response.json()["id"])
        report = asyncio.run(run(args, base, key, job_ids))
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
    report["machine"] = f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs"
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    for kind, row in report["kinds"].items():
        print(f"{kind:14} {row['requests']:7d} req {row['per_s']:8.1f}/s  p50 {row['p50_ms']:6.1f}"
              f" ms  p99 {row['p99_ms']:6.1f} ms  max {row['max_ms']:7.1f} ms  "
              f"errors {row['errors']}")  # fmt: skip
    print(f"total {report['requests_per_s']} req/s, {report['errors']} errors, uploads "
          f"{report.get('upload_MB_per_s', 0)} MB/s")
    print(json.dumps(report))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
