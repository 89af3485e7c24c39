"""Stopping the subprocesses that tests start (workers, API servers, the CLI)."""

from __future__ import annotations

import signal
import subprocess


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
