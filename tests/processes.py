"""Stopping the subprocesses that tests start (workers, API servers, the CLI), and finding
the processes they start in turn."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path


def stop_process(process: subprocess.Popen, *, sig: int = signal.SIGTERM,
                 timeout: float = 30) -> int:  # fmt: skip
    """Send ``sig``, wait up to ``timeout`` seconds, then kill; the exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from ``/proc``: Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:  # ended meanwhile
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (a zombie, ended but not yet reaped, is not)."""
    try:
        return "\nState:\tZ" not in (Path("/proc") / str(pid) / "status").read_text()
    except OSError:
        return False
