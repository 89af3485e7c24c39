"""Commands that talk to a running service: ``submit``, ``status``, ``jobs``, ``fetch``.

The service is ``--url``, else ``CAIMX_URL``, else http://127.0.0.1:8000; ``CAIMX_API_KEY`` is
sent as a bearer token when set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from caimx.cli import add_reading_options


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None,
                        help="service URL (default: CAIMX_URL, else http://127.0.0.1:8000)")


def register(subparsers) -> None:
    """Add ``submit``, ``status``, ``jobs`` and ``fetch``."""
    p = subparsers.add_parser(
        "submit", help="queue a movie on the service (uploaded, on shared storage, or a URL)",
        description="Queue a job and print its id. A local movie is uploaded (resumably where "
                    "the service allows); a URL (s3://..., https://...) or, with --shared, a "
                    "path on the service's storage is read where it is.")  # fmt: skip
    p.add_argument("movie", nargs="?",
                   help="movie file (TIFF, .npy, HDF5, NWB, .sbx, ...), or an fsspec URL under "
                        "the service's CAIMX_REMOTE_ALLOWED_PREFIXES")
    p.add_argument("--shared", action="store_true",
                   help="MOVIE is a path on the service's shared storage (relative to one of its "
                        "CAIMX_ALLOWED_ROOTS); nothing is uploaded")
    add_reading_options(p)
    p.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    p.add_argument("--watch", type=Path, default=None, metavar="DIR",
                   help="instead of MOVIE: submit every finished movie that appears in DIR, once "
                        "(remembered in DIR/.caimx-submitted.json across restarts)")
    p.add_argument("--settle", type=float, default=30.0,
                   help="--watch: seconds a file must stay unchanged to count as finished")
    p.add_argument("--pattern", action="append", default=None,
                   help="--watch: file name pattern (repeatable; default: movie extensions)")
    p.add_argument("--state", type=Path, default=None, help="--watch: state file to use")
    p.add_argument("--model", default=None, help="installed model (default: the service's)")
    p.add_argument("--fps", type=float, default=None, help="frame rate if the file has none")
    p.add_argument("--params", type=Path, default=None, help="JSON file of job parameters")
    p.add_argument("--no-resumable", action="store_true", help="one multipart request")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _common(p)
    p.set_defaults(func=run_submit)

    s = subparsers.add_parser("status", help="state and progress of a job")
    s.add_argument("job", help="job id")
    s.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    s.add_argument("--json", action="store_true", help="print the job as JSON")
    _common(s)
    s.set_defaults(func=run_status)

    j = subparsers.add_parser("jobs", help="recent jobs of the service, newest first")
    j.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    j.add_argument("--state", default=None,
                   choices=("queued", "running", "succeeded", "failed", "canceled"))
    j.add_argument("--json", action="store_true", help="print JSON")
    _common(j)
    j.set_defaults(func=run_jobs)

    f = subparsers.add_parser("fetch", help="download a finished job's result",
                              description="zarr: the result group (result.zip); nwb, suite2p, "
                                          "tiff: the exports of docs/exports.md.")  # fmt: skip
    f.add_argument("job", help="job id")
    f.add_argument("-o", "--output", type=Path, required=True, help="folder to write into")
    f.add_argument("--format", default="zarr", choices=("zarr", "nwb", "suite2p", "tiff"))
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(f)
    f.set_defaults(func=run_fetch)


def _client(args: argparse.Namespace):
    from caimx.client import Client

    return Client(args.url)


def _line(job: dict) -> str:
    progress = job.get("progress") or {}
    done, total = progress.get("chunks_done", 0), progress.get("chunks_total", 0)
    text = f"{job['id']}  {job['state']:<9}  {done}/{total} chunks  {job['movie']['name']}"
    return text + (f"  ({job['error']})" if job.get("error") else "")


def _run(action):
    """Turn service and connection errors into one-line CLI errors."""
    import httpx

    from caimx.cli import CliError
    from caimx.client import ApiError

    try:
        return action()
    except ApiError as exc:
        raise CliError(str(exc)) from exc
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the service: {exc}") from exc


def _finish(job: dict) -> int:
    print(_line(job))
    return 0 if job["state"] == "succeeded" else 1


def run_submit(args: argparse.Namespace) -> int:
    from caimx.cli import CliError
    from caimx.remote import is_url

    params = json.loads(args.params.read_text(encoding="utf-8")) if args.params else {}
    params.update({k: v for k, v in (("model", args.model), ("fps", args.fps)) if v is not None})
    if args.watch is not None:
        if args.shared or any(v is not None for v in (args.plane, args.channel, args.dataset)):
            raise CliError("--shared, --plane, --channel and --dataset name one MOVIE; they do "
                           "not apply to --watch")
        return _watch(args, params)
    if args.movie is None:
        raise CliError("name a MOVIE, or a folder to watch with --watch DIR")
    if not (args.shared or is_url(args.movie) or Path(args.movie).is_file()):
        raise CliError(f"no movie at {args.movie}")
    with _client(args) as client:
        job = _run(lambda: client.submit(args.movie, progress=not args.quiet,
                                         resumable=False if args.no_resumable else None,
                                         shared=args.shared, plane=args.plane,
                                         channel=args.channel, dataset=args.dataset,
                                         **params))  # fmt: skip
        print(job["id"], flush=True)
        if args.wait:
            return _finish(_run(lambda: client.wait(job, progress=not args.quiet)))
    return 0


def _watch(args: argparse.Namespace, params: dict) -> int:
    from caimx.cli import CliError
    from caimx.watch import DEFAULT_PATTERNS, FolderWatcher

    if not args.watch.is_dir():
        raise CliError(f"{args.watch} is not a folder")
    with _client(args) as client:
        watcher = FolderWatcher(args.watch, client, settle_s=args.settle, state_path=args.state,
                                patterns=tuple(args.pattern or DEFAULT_PATTERNS), params=params)
        watcher.run_forever()
    return 0


def run_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = _run(lambda: client.wait(args.job) if args.wait else client.status(args.job))
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    if args.wait:
        return _finish(job)
    print(_line(job))
    return 0


def run_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        jobs = _run(lambda: client.list(limit=args.limit, state=args.state))
    if args.json:
        print(json.dumps(jobs, indent=2))
    for job in [] if args.json else jobs:
        print(_line(job))
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        path = _run(lambda: client.download(args.job, args.format, args.output,
                                            progress=not args.quiet))  # fmt: skip
    print(path)
    return 0
