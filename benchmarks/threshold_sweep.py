"""Shared by the accuracy benchmarks: run the network once, then score every combination of
decision thresholds by re-finalizing the same chunk results."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model.evaluate import Score, evaluate
from model.inference import InferenceParams, finalize, prepare, run_chunk
from model.inference.params import DecideParams
from model.inference.plan import Plan
from model.results import read_result


def run_network(movie: Any, predictor: Any, work: Path, params: InferenceParams) -> Plan:
    """Plan ``movie`` in ``work`` and run the chunks that have no result there yet."""
    plan = prepare(movie, predictor.card, work_dir=work, params=params)
    for chunk in plan.chunks:
        if not (work / "chunks" / chunk.id / "meta.json").exists():
            run_chunk(movie, predictor, plan, chunk.id, work_dir=work)
    return plan


Thresholds = dict[str, Any]


def score_thresholds(plan: Plan, work: Path, truth: Any, grid: dict[str, tuple],
                     params: InferenceParams) -> Iterator[tuple[Thresholds, Score]]:  # fmt: skip
    """For each combination in ``grid`` (``DecideParams`` fields -> values): the combination and
    its score against ``truth`` (``masks``, ``traces``)."""
    out = work / "sweep.zarr"
    for values in itertools.product(*grid.values()):
        thresholds = dict(zip(grid, values, strict=True))
        finalize(plan, work_dir=work, output=out,
                 params=InferenceParams(decide=DecideParams(**thresholds), motion=params.motion))
        result = read_result(out)
        yield thresholds, evaluate(result.footprints, truth.masks, found_traces=result.traces,
                                   true_traces=truth.traces)  # fmt: skip
