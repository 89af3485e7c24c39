"""How precision and recall move with the decision thresholds, on a simulated movie.

The network runs once (chunks kept in a work folder); every threshold combination is then a cheap
re-finalize of the same chunk results. Prints one JSON line per combination.

    .venv/bin/python benchmarks/sweep_decide.py --size 128 --frames 600 --seed 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from threshold_sweep import run_network, score_thresholds

from model.inference import InferenceParams
from model.inference.params import MotionParams
from model.serving import SavedModelPredictor
from model.simulate.movie import simulate
from model.simulate.params import SimulationParams

GRID = {
    "min_area": (20, 50, 80),
    "min_snr": (0.0, 3.0, 5.0, 8.0),
    "min_tile_evidence": (0.0, 0.5),
    "min_windows": (1, 2),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--photons", type=float, default=4.0)
    ap.add_argument("--model", default="model/zoo/deepcaimx-mini")
    ap.add_argument("--work", default=None, help="keep chunk results here (re-used if present)")
    args = ap.parse_args()
    sim = simulate(SimulationParams(height=args.size, width=args.size, frames=args.frames,
                                    seed=args.seed, photons=args.photons), keep_clean=False)
    truth = sim.truth
    predictor = SavedModelPredictor.load(args.model)
    params = InferenceParams(motion=MotionParams(enabled=False))
    work = Path(args.work or tempfile.mkdtemp(prefix="caimx-sweep-"))
    t0 = time.perf_counter()
    plan = run_network(sim.movie, predictor, work, params)
    print(json.dumps({"movie": [args.frames, args.size, args.size], "true_cells": truth.count,
                      "network_s": round(time.perf_counter() - t0, 1), "work": str(work)}),
          flush=True)
    for thresholds, score in score_thresholds(plan, work, truth, GRID, params):
        row = {**thresholds,
               **{k: round(v, 3) if isinstance(v, float) else v
                  for k, v in score.to_dict().items() if k != "matches"}}
        print(json.dumps(row), flush=True)

if __name__ == "__main__":
    main()
