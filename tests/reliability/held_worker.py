"""``caimx worker`` that stops one chunk in its middle, for the test that kills a worker there.

Run as ``python held_worker.py worker ...`` (``start_worker(..., hold=folder)``) with
``RELIABILITY_HOLD_DIR`` naming a folder. Until that folder holds a file ``armed``, every chunk runs
as usual. Once it does, the first chunk to start runs to its end and the next one stops at its first
network batch: it writes ``holding`` there and waits until the test kills the worker (10 minutes at
most, then it goes on). That chunk's delivery is counted, its movie opened and read, and its result
not written, so a kill sent after ``holding`` appears lands in the middle of it, however fast the
CPU.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from celery.signals import worker_process_init

HOLD = Path(os.environ["RELIABILITY_HOLD_DIR"])
HOLD_S = 600.0


class HeldPredictor:
    """The worker's predictor, except that each network batch first waits to be killed."""

    def __init__(self, predictor: Any) -> None:
        self._predictor = predictor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)

    def _hold(self) -> None:
        (HOLD / "holding").touch()
        time.sleep(HOLD_S)

    def predict(self, patches: Any) -> Any:
        self._hold()
        return self._predictor.predict(patches)

    def start(self, patches: Any, **kwargs: Any) -> Any:
        from model.inference.run import start_predict

        self._hold()
        return start_predict(self._predictor, patches, **kwargs)


def hold_second_armed_chunk(**_: object) -> None:
    """In each pool process: the worker's ``run_chunks`` holds the second chunk run once armed."""
    import model.inference as engine

    run_chunks, armed_runs = engine.run_chunks, []

    def run_chunks_holding(movie: Any, predictor: Any, *args: Any, **kwargs: Any) -> Any:
        if (HOLD / "armed").exists():
            if armed_runs:  # one chunk of the armed job already ran to its end
                predictor = HeldPredictor(predictor)
            armed_runs.append(True)
        return run_chunks(movie, predictor, *args, **kwargs)

    engine.run_chunks = run_chunks_holding


worker_process_init.connect(hold_second_armed_chunk, weak=False)

if __name__ == "__main__":
    from caimx.cli import main

    sys.exit(main())
