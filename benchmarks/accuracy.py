"""Accuracy of the engine per input scaling, SNR level and neuron density, on simulated movies.

Two steps. ``run`` simulates movies (``model.simulate``), runs the network once per movie and input
scaling (chunk results kept under ``--work``), then re-finalizes the same chunks for every
combination of decision thresholds in ``GRID`` and appends one JSON line per combination to
``--out``. ``table`` reads those lines, picks the decision thresholds with the best mean F1 on the
``--choose`` seeds and prints a markdown table for the ``--report`` seeds (other seeds), so the
thresholds are never chosen on the movies they are reported on.

    .venv/bin/python benchmarks/accuracy.py run --seeds 1 --scalings minmax-per-patch \\
        movie-range@0.35 --out acc.jsonl
    .venv/bin/python benchmarks/accuracy.py table acc.jsonl --choose 1 --report 2

A scaling is ``minmax-per-patch`` or ``movie-range@LEVEL`` (``LEVEL``: the
``ScalingParams.background_level``; ``movie-range`` alone uses the default). The model card's own
``input_scaling`` is replaced for the run, nothing on disk changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shutil
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

GRID: dict[str, tuple[Any, ...]] = {
    "min_area": (20, 26, 40),
    "min_contrast": (None, 0.0),
    "dark_soma_evidence": (None, 0.6),
}
SCORES = ("n_true", "n_found", "precision", "recall", "f1", "mean_iou", "trace_r")


class _CardOverride:
    """A predictor whose card names another ``input_scaling``."""

    def __init__(self, predictor: Any, input_scaling: str) -> None:
        self.card = dataclasses.replace(predictor.card, input_scaling=input_scaling)
        self.predict = predictor.predict


def _scaling(spec: str):
    from model.inference.params import ScalingParams

    mode, _, level = spec.partition("@")
    return mode, ScalingParams(background_level=float(level)) if level else ScalingParams()


def run(args: argparse.Namespace) -> None:
    from threshold_sweep import run_network, score_thresholds

    from model.inference import InferenceParams
    from model.inference.params import MotionParams, PlanParams
    from model.serving import SavedModelPredictor
    from model.simulate import SimulationParams, simulate

    base = SavedModelPredictor.load(args.model)
    out_file = Path(args.out)
    for seed, photons, density in itertools.product(args.seeds, args.photons, args.densities):
        sim = simulate(SimulationParams(height=args.size, width=args.size, frames=args.frames,
                                        seed=seed, photons=photons, density_per_mm2=density),
                       keep_clean=False)
        truth = sim.truth
        for spec in args.scalings:
            mode, scaling = _scaling(spec)
            predictor = _CardOverride(base, mode)
            plan_params = PlanParams(tile_overlap=args.tile_overlap,
                                     window_overlap=args.window_overlap)
            params = InferenceParams(scaling=scaling, motion=MotionParams(enabled=False),
                                     plan=plan_params)
            work = (Path(args.work) / f"s{seed}-p{photons:g}-d{density:g}-{spec}"
                    f"-t{args.tile_overlap}-w{args.window_overlap}")
            t0 = time.perf_counter()
            plan = run_network(sim.movie, predictor, work, params)
            network_s = time.perf_counter() - t0
            rows = []
            for thresholds, score in score_thresholds(plan, work, truth, GRID, params):
                scores = score.to_dict()
                rows.append({"seed": seed, "photons": photons, "density": density,
                             "scaling": spec, "movie": [args.frames, args.size, args.size],
                             "tile_overlap": args.tile_overlap,
                             "window_overlap": args.window_overlap,
                             "patches_per_frame": round(plan.patches_per_frame, 4),
                             "network_s": round(network_s, 1), **thresholds,
                             **{k: scores[k] for k in SCORES}})
            shutil.rmtree(work / "sweep.zarr", ignore_errors=True)
            with out_file.open("a", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            best = max(rows, key=lambda r: r["f1"])
            print(f"seed {seed} photons {photons:g} density {density:g} {spec}: "
                  f"{truth.count} cells, {network_s:.0f} s, best F1 {best['f1']:.2f}", flush=True)


def _mean(values: list[float]) -> float:
    values = [v for v in values if v == v]  # NaN (no match) left out
    return statistics.fmean(values) if values else float("nan")


def table(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in Path(args.file).read_text().splitlines() if line]
    key = tuple(GRID)
    choose = [r for r in rows if r["seed"] in args.choose]
    report = [r for r in rows if r["seed"] in args.report]
    print(f"thresholds chosen on seeds {args.choose}, reported on seeds {args.report}\n")
    header = ("| scaling | photons | density /mm^2 | true cells | found | precision | recall | F1 "
              "| mean IoU | trace r |")
    for spec in sorted({r["scaling"] for r in rows}):
        by_combo: dict[tuple, list[float]] = defaultdict(list)
        for r in choose:
            if r["scaling"] == spec:
                by_combo[tuple(r[k] for k in key)].append(r["f1"])
        if not by_combo:
            continue
        best = max(by_combo, key=lambda c: _mean(by_combo[c]))
        from model.inference.params import DecideParams

        default = ("defaults", tuple(getattr(DecideParams(), k) for k in key))
        for label, combo in (("chosen", best), default):
            picked = [r for r in report if r["scaling"] == spec
                      and tuple(r[k] for k in key) == tuple(combo)]
            print(f"{spec}, {label} thresholds {dict(zip(key, combo, strict=True))} "
                  f"(mean F1 on the choosing seeds {_mean(by_combo[tuple(combo)]):.2f})")
            print(header)
            print("|" + "---|" * 10)
            groups: dict[tuple, list[dict]] = defaultdict(list)
            for r in picked:
                groups[(r["photons"], r["density"])].append(r)
            for (photons, density), group in sorted(groups.items()):
                cells = [
                    spec, f"{photons:g}", f"{density:g}", str(sum(g["n_true"] for g in group)),
                    str(sum(g["n_found"] for g in group)),
                    *(f"{_mean([g[k] for g in group]):.2f}"
                      for k in ("precision", "recall", "f1", "mean_iou", "trace_r")),
                ]
                print("| " + " | ".join(cells) + " |")
            all_f1 = _mean([g["f1"] for g in picked])
            print(f"\nmean F1 over the reported movies: {all_f1:.2f}\n")


def main() -> None:
    from model.inference.params import PlanParams

    plan_defaults = PlanParams()
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="simulate, run the network, sweep the decision thresholds")
    r.add_argument("--size", type=int, default=96)
    r.add_argument("--frames", type=int, default=200)
    r.add_argument("--seeds", type=int, nargs="+", default=[1])
    r.add_argument("--photons", type=float, nargs="+", default=[1.0, 4.0, 16.0],
                   help="the simulator's SNR knob (photons per pixel per frame at the neuropil)")
    r.add_argument("--densities", type=float, nargs="+", default=[800.0, 2000.0])
    r.add_argument("--scalings", nargs="+", default=["minmax-per-patch", "movie-range"])
    r.add_argument("--model", default="model/zoo/deepcaimx-mini")
    r.add_argument("--tile-overlap", type=int, default=plan_defaults.tile_overlap,
                   help="pixels shared by neighbouring tiles")
    r.add_argument("--window-overlap", type=int, default=plan_defaults.window_overlap,
                   help="frames shared by neighbouring windows")
    r.add_argument("--work", default="/tmp/caimx-accuracy", help="chunk results (re-used)")
    r.add_argument("--out", required=True, help="JSON lines are appended here")
    t = sub.add_parser("table", help="choose thresholds on some seeds, report on others")
    t.add_argument("file")
    t.add_argument("--choose", type=int, nargs="+", required=True)
    t.add_argument("--report", type=int, nargs="+", required=True)
    args = ap.parse_args()
    if args.command == "table" and set(args.choose) & set(args.report):
        ap.error("--choose and --report seeds must differ")
    {"run": run, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
