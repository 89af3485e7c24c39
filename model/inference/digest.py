"""The input's SHA-256: the movie's file (or, for in-memory movies, its pixel bytes), read
alongside the engine's work.

A file is hashed in a process of its own. On a thread of the engine's process, the hash must
take the interpreter lock back after every block it reads and every block it hashes, and the
engine's own threads hold that lock often: 2 GB hashed in 4 MB blocks beside one busy Python
thread took 4.3x as long as alone, beside three 12.5x (this host, 2 cores). The process imports
nothing but ``hashlib`` and needs about 20 ms to start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Bytes read and hashed at once (a thread hashing in the engine's process takes the interpreter
#: lock back once per block: the fewer blocks, the fewer waits for it).
BLOCK_BYTES = 16 << 20

#: What the hashing process runs (``python -I -S -c``; its arguments: the file's path and the
#: process id of the process that started it). It stops, without a digest, as soon as that
#: process has ended (it then has another parent), so a killed engine leaves no reader of its
#: movie behind.
FILE_DIGEST_SCRIPT = f"""
import hashlib, os, sys
parent = int(sys.argv[2])
digest = hashlib.sha256()
block = bytearray({BLOCK_BYTES})
view = memoryview(block)
with open(sys.argv[1], "rb", buffering=0) as handle:
    while size := handle.readinto(block):
        digest.update(view[:size])
        if os.getppid() != parent:
            sys.exit("the process that asked for this digest has ended")
print(digest.hexdigest())
"""


def movie_file(movie: Any) -> Path | None:
    """The single local file ``movie`` was read from, if it was (a Zarr store is a folder, a
    URL no local file: ``None``)."""
    path = getattr(movie, "path", None)
    if path is not None and not getattr(movie, "url", None) and Path(path).is_file():
        return Path(path)
    return None


def movie_sha256(movie: Any, *, block_frames: int = 64,
                 stop: threading.Event | None = None) -> str:
    """SHA-256 of the movie's file (streamed), or of its pixel bytes for in-memory movies, in
    this thread; ``""`` for a movie read from a URL (hashing it would download it once more).

    A set ``stop`` ends the reading early; the (then meaningless) digest so far is returned.
    """
    if getattr(movie, "url", None):
        return ""
    digest = hashlib.sha256()
    path = movie_file(movie)
    if path is not None:
        block = bytearray(BLOCK_BYTES)
        view = memoryview(block)
        with open(path, "rb", buffering=0) as handle:
            while size := handle.readinto(block):
                digest.update(view[:size])
                if stop is not None and stop.is_set():
                    break
        return digest.hexdigest()
    n_frames = movie.shape[0]
    for t0 in range(0, n_frames, block_frames):
        if stop is not None and stop.is_set():
            break
        frames = movie.read(t0, min(n_frames, t0 + block_frames))
        digest.update(np.ascontiguousarray(frames).tobytes())
    return digest.hexdigest()


class MovieDigest:
    """The movie's SHA-256, started at once and made alongside everything else.

    Hashing is a full read of the movie (5 GB for 10000 frames of 512 x 512): done after the
    chunks it would add seconds to a GPU run; alongside them it costs a core. A file is hashed in
    a process of its own (see the module's notes); should that process fail to start or to
    finish, the file is hashed on this object's thread instead, so a movie is never refused
    for the sake of the speed-up. In-memory movies are hashed on the thread; a movie read from
    a URL is not hashed (its digest is ``""``).
    """

    def __init__(self, movie: Any, *, start: bool = True) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._value: str | None = None
        self._error: BaseException | None = None
        #: ``time.perf_counter()`` when the digest was done (or failed, or was cancelled)
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(movie,), name="caimx-sha256",
                                        daemon=True)
        self._started = False
        if start:
            self.start()

    def start(self) -> None:
        """Begin reading (once; ``start=False`` left it to the caller)."""
        with self._lock:
            if not self._started and not self._stop.is_set():
                self._started = True
                self._thread.start()

    def _run(self, movie: Any) -> None:
        try:
            path = movie_file(movie)
            value = self._hash_in_process(path) if path is not None else None
            if value is None and not self._stop.is_set():
                value = movie_sha256(movie, stop=self._stop)
            self._value = value
        except BaseException as exc:  # handed to result()
            self._error = exc
        finally:
            self.finished_at = time.perf_counter()

    def _hash_in_process(self, path: Path) -> str | None:
        """The file's digest from a hashing process; ``None`` if it failed or was cancelled."""
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", FILE_DIGEST_SCRIPT, str(path), str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            log.warning("could not start a process to hash %s (%s); hashing it in this one",
                        path, exc)
            return None
        with self._lock:
            self._process = process
            if self._stop.is_set():
                process.kill()
        out, err = process.communicate()
        if process.returncode == 0:
            return out.decode("ascii").strip()
        if not self._stop.is_set():
            log.warning("the process hashing %s failed (exit status %s: %s); hashing it in "
                        "this one", path, process.returncode,
                        err.decode(errors="replace").strip()[-500:])
        return None

    def result(self) -> str:
        """The digest, once the whole movie is read (re-raises the thread's error)."""
        self.start()
        if not self._started:
            raise RuntimeError("the movie digest was cancelled")
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._stop.is_set():
            raise RuntimeError("the movie digest was cancelled")
        assert self._value is not None
        return self._value

    def cancel(self) -> None:
        """Stop reading (the engine failed or was cancelled); returns without waiting."""
        self._stop.set()
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.kill()


class KnownDigest:
    """A movie's SHA-256 known before the engine starts (an upload is hashed as it arrives):
    :class:`MovieDigest`'s interface without reading the movie again."""

    def __init__(self, sha256: str) -> None:
        value = sha256.strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError(f"not a SHA-256 in hexadecimal: {sha256!r}")
        self._value = value
        self.finished_at = time.perf_counter()

    def start(self) -> None:
        """Nothing to read."""

    def result(self) -> str:
        return self._value

    def cancel(self) -> None:
        """Nothing to stop."""


@contextmanager
def digest_alongside(movie: Any, known: str | None = None, *,
                     start: bool = True) -> Iterator[MovieDigest | KnownDigest]:
    """The movie's digest for the caller's block: ``known`` when it was given (an upload hashed as
    it arrived), otherwise a :class:`MovieDigest` made alongside the block's work (from its
    ``start()``, or at once); cancelled when the block ends, so a failure or a cancel leaves no
    reader of the movie behind.

    The result is written with ``DIGEST_PENDING`` as its digest and, once the block's work is
    done, ``write_input_digest(output, digest.result())`` (:mod:`model.results`).
    """
    digest = MovieDigest(movie, start=start) if not known else KnownDigest(known)
    try:
        yield digest
    finally:
        digest.cancel()
