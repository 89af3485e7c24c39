"""How long the input's SHA-256 takes beside Python threads that hold the interpreter lock.

The engine hashes the movie alongside its own work (reading threads, candidate threads, the
thread feeding the network). Each row hashes the same file with ``busy`` pure-Python threads
running, in three ways: on a thread in 4 MB blocks (the engine until 2026-11-27), on a thread
in ``BLOCK_BYTES`` blocks (:func:`movie_sha256`, the fallback), and in a process of its own
(:class:`MovieDigest`, what the engine does for a file). Read from the page cache: the file is
read once before the rows.

    .venv/bin/python benchmarks/digest.py --gigabytes 2 --work /tmp/digest
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.inference.digest import BLOCK_BYTES, MovieDigest, movie_sha256  # noqa: E402


class _File:
    """A movie as far as the digest cares: its file."""

    def __init__(self, path: Path) -> None:
        self.path = path


def _thread_4mb(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _on_a_thread(hash_file: Callable[[Path], str], path: Path) -> str:
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(hash_file(path)))
    thread.start()
    thread.join()
    return result[0]


def _hold_the_lock(stop: threading.Event) -> None:
    total = 0
    while not stop.is_set():
        for i in range(1000):
            total += i


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 3])
    parser.add_argument("--work", type=Path, default=Path("/tmp/caimx-digest"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / "random.bin"
    size = int(args.gigabytes * (1 << 30))
    if not path.exists() or path.stat().st_size != size:
        with open(path, "wb") as handle:
            for _ in range(0, size, 1 << 26):
                handle.write(os.urandom(1 << 26)[: size - handle.tell()])
    expected = _thread_4mb(path)  # also brings the file into the page cache
    ways: dict[str, Callable[[], Any]] = {
        "thread, 4 MB blocks": lambda: _on_a_thread(_thread_4mb, path),
        f"thread, {BLOCK_BYTES >> 20} MB blocks": lambda: _on_a_thread(
            lambda p: movie_sha256(_File(p)), path),
        "process": lambda: MovieDigest(_File(path)).result(),
    }
    print(f"{size / 1e9:.2f} GB, {os.cpu_count()} cores")
    for busy in args.busy:
        for name, run in ways.items():
            stop = threading.Event()
            threads = [threading.Thread(target=_hold_the_lock, args=(stop,)) for _ in range(busy)]
            for thread in threads:
                thread.start()
            t0 = time.perf_counter()
            value = run()
            seconds = time.perf_counter() - t0
            stop.set()
            for thread in threads:
                thread.join()
            assert value == expected, name
            print(f"busy threads {busy}  {name:<22} {seconds:6.2f} s  "
                  f"{size / 1e9 / seconds:5.2f} GB/s", flush=True)


if __name__ == "__main__":
    main()
