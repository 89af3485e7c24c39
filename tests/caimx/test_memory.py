"""``limit_malloc_arenas``: threads that allocate share at most the capped number of arenas."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
    reason="glibc only")

# Four threads allocate at once; glibc's malloc_stats() then prints one "Arena N:" per arena.
PROBE = """
import ctypes, sys, threading
from caimx.memory import limit_malloc_arenas
arenas = int(sys.argv[1])
print("set" if limit_malloc_arenas(arenas) else "unset", flush=True)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
start, done = threading.Barrier(4), threading.Barrier(4)
def work():
    start.wait()
    blocks = [libc.malloc(4096) for _ in range(64)]
    done.wait()
    for b in blocks:
        libc.free(b)
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
libc.malloc_stats()
"""


def _arenas(cap: int, env_cap: str | None = None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    if env_cap is not None:
        env["MALLOC_ARENA_MAX"] = env_cap
    out = subprocess.run([sys.executable, "-c", PROBE, str(cap)], capture_output=True,
                         text=True, env=env, timeout=60, check=True)
    return out.stdout.strip(), out.stderr.count("Arena ")


def test_cap_limits_the_arenas_of_allocating_threads() -> None:
    state, uncapped = _arenas(0)
    assert state == "unset" and uncapped >= 3  # glibc's default: an arena per thread here
    state, capped = _arenas(2)
    assert state == "set" and capped <= 2


def test_environment_wins() -> None:
    state, _ = _arenas(2, env_cap="4")
    assert state == "unset"
