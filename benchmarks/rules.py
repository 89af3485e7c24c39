"""Accuracy of the default decisions, and of each decision rule turned off, on simulated and real
movies: the evidence behind ``docs/accuracy.md`` and ``docs/decision-rules.md``.

The network runs once per movie (``run``: chunk results kept under ``--work``); every variant is
then a cheap re-finalize of the same chunks (``score``). Movies:

- simulated (``model.simulate``, seeded): ``--size`` x ``--size`` x ``--frames`` at 30 Hz, photons
  1, 4 and 16 per pixel per frame x 800 and 2000 somata per mm^2 (bright somata, the simulator's
  defaults), plus dim somata in bright neuropil (``soma_occlusion`` 0.6-1, ``baseline`` 0.2-1) at 4
  photons; every seed in ``--seeds``. Seeds 101 chose the rules and thresholds; 201 is held out.
- the real development recording (``../shared/data/neurofinder-dev``, 106 labelled somata), scored
  per half: the left half (columns < 128) chose, the right half is held out.

Everything runs with the engine's defaults (motion correction on, soma size estimated, frames
resized when it is off the model's). Variants are the rule switches of ``VARIANTS``: each turns
one rule off (or the one rule this measures on its own) over today's defaults.

    .venv/bin/python benchmarks/rules.py run --seeds 101 201 --work /tmp/caimx-rules
    .venv/bin/python benchmarks/rules.py score --work /tmp/caimx-rules --out rules.jsonl
    .venv/bin/python benchmarks/rules.py table rules.jsonl

Scores: ``model.evaluate`` (IoU >= 0.5, Hungarian matching; simulated cells less than half inside
the frame are neither to be found nor false detections). A group's F1 pools its movies' matches.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "neurofinder-dev"
PHOTONS, DENSITIES = (1, 4, 16), (800, 2000)
DIM = {"soma_occlusion": (0.6, 1.0), "baseline": (0.2, 1.0)}
#: One rule off (or changed) per variant, over the defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "no dark somata from the mean image": {"decide": {"dark_soma_evidence": None}},
    "no soma contrast (min_contrast)": {"decide": {"min_contrast": None}},
    "no bright-neighbour rescue": {"decide": {"bright_neighbour_contrast": None}},
    "no active_snr exemption": {"decide": {"active_snr": 1000.0}},
    "no window share": {"decide": {"min_window_fraction": 0.0}},
    "min_area 20 (was the default)": {"decide": {"min_area": 20}},
    "no min_area": {"decide": {"min_area": 1}},
    "no split": {"decide": {"split_distance": None}},
    "no refine (nor grow)": {"decide": {"refine_level": None}},
    "refine every footprint (refine_above 0)": {"decide": {"refine_above": 0.0}},
    "no grow": {"decide": {"grow_below": None}},
    "keep tile fragments": {"stitch": {"drop_fragments": False}},
}


def movies(seeds: list[int]) -> list[tuple[str, dict[str, Any]]]:
    """``(name, simulation overrides)`` of every simulated movie of ``seeds``."""
    out = []
    for seed in seeds:
        for photons in PHOTONS:
            for density in DENSITIES:
                out.append((f"s{seed}-p{photons}-d{density}",
                            {"seed": seed, "photons": photons, "density_per_mm2": density}))
        for density in DENSITIES:
            out.append((f"s{seed}-p4-d{density}-dim",
                        {"seed": seed, "photons": 4, "density_per_mm2": density, **DIM}))
    return out


def run(args: argparse.Namespace) -> None:
    from model.inference import InferenceParams, prepare, run_chunk
    from model.io import open_movie
    from model.runtimes import load_predictor
    from model.simulate import SimulationParams, simulate

    work = Path(args.work)
    predictor = load_predictor(ROOT / "model" / "zoo" / args.model, "savedmodel")
    todo: list[tuple[str, Any]] = [(name, over) for name, over in movies(args.seeds)]
    if not args.no_real:
        todo.insert(0, ("real", None))
    for name, over in todo:
        folder = work / name
        if (folder / "done").exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if over is None:
            movie = open_movie(DATA / "movie.tif")
        else:
            sim = simulate(SimulationParams(height=args.size, width=args.size,
                                            frames=args.frames, dtype="uint16", **over),
                           keep_clean=False)
            np.savez_compressed(folder / "truth.npz", masks=sim.truth.masks,
                                visible=sim.truth.visible_fraction)
            movie = sim.movie
        plan = prepare(movie, predictor.card, work_dir=folder, params=InferenceParams())
        for chunk in plan.chunks:
            run_chunk(movie, predictor, plan, chunk.id, work_dir=folder)
        (folder / "done").write_text(json.dumps({"network_s": time.perf_counter() - t0,
                                                 "resample": plan.resample}))
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _labels() -> np.ndarray:
    return np.load(DATA / "gt_masks.npz")["masks"]


def score(args: argparse.Namespace) -> None:
    from model.evaluate import evaluate
    from model.inference import InferenceParams, finalize
    from model.inference.engine import load_plan
    from model.results import read_result

    work = Path(args.work)
    names = sorted(p.name for p in work.iterdir() if (p / "done").exists())
    with Path(args.out).open("a", encoding="utf-8") as out:
        for variant, over in VARIANTS.items():
            if args.variants and variant not in args.variants:
                continue
            for name in names:
                plan = load_plan(work / name)
                # today's decision and stitching defaults (finalize takes only those from params;
                # the rest comes from the plan the network ran with)
                params = InferenceParams.from_dict(_merged(InferenceParams().to_dict(), over))
                finalize(plan, work_dir=work / name, output=work / name / "variant.zarr",
                         params=params)
                found = read_result(work / name / "variant.zarr").footprints > 0
                row: dict[str, Any] = {"variant": variant, "movie": name}
                if name == "real":
                    labels = _labels()
                    left_f, left_t = _left(found), _left(labels)
                    parts = {"left": (found[left_f], labels[left_t]),
                             "right": (found[~left_f], labels[~left_t]), "all": (found, labels)}
                    for part, (f, t) in parts.items():
                        s = evaluate(f, t)
                        row[part] = [s.n_matched, s.n_found, s.n_true]
                else:
                    truth = np.load(work / name / "truth.npz")
                    s = evaluate(found, truth["masks"], ignore=truth["visible"] < 0.5)
                    row["all"] = [s.n_matched, s.n_found, s.n_true]
                out.write(json.dumps(row) + "\n")
                out.flush()
            print(f"scored {variant}", flush=True)


def _left(masks: np.ndarray) -> np.ndarray:
    cols = np.array([np.nonzero(m)[1].mean() if m.any() else -1.0 for m in masks])
    return cols < masks.shape[2] / 2


def _f1(matched: int, found: int, true: int) -> tuple[float, float, float]:
    p = matched / found if found else 0.0
    r = matched / true if true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _group(movie: str) -> str:
    """``s101-p4-d800-dim`` -> ``p4-d800-dim`` (seeds pooled per condition)."""
    return movie.split("-", 1)[1]


def table(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines() if line]
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        if r["movie"] == "real":
            for part in ("left", "right", "all"):
                sums[(r["variant"], f"real {part}")] = r[part]
            continue
        seed = r["movie"].split("-")[0]
        for key in (f"{seed} {_group(r['movie'])}", f"{seed} all simulated"):
            acc = sums[(r["variant"], key)]
            for i in range(3):
                acc[i] += r["all"][i]
    columns = sorted({k[1] for k in sums}, key=lambda c: (not c.startswith("real"), c))
    if args.columns:
        columns = [c for c in columns if any(w in c for w in args.columns)]
    print("| variant | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for variant in dict.fromkeys(r["variant"] for r in rows):
        cells = []
        for c in columns:
            if (variant, c) not in sums:
                cells.append("")
                continue
            p, rc, f = _f1(*sums[(variant, c)])
            cells.append(f"{f:.3f}" if args.f1_only else f"{p:.2f} / {rc:.2f} / {f:.3f}")
        print(f"| {variant} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--seeds", type=int, nargs="*", default=[101, 201])
    r.add_argument("--size", type=int, default=192)
    r.add_argument("--frames", type=int, default=500)
    r.add_argument("--model", default="caimx-mini")
    r.add_argument("--work", default="/tmp/caimx-rules")
    r.add_argument("--no-real", action="store_true", help="simulated movies only")
    s = sub.add_parser("score")
    s.add_argument("--work", default="/tmp/caimx-rules")
    s.add_argument("--out", required=True)
    s.add_argument("--variants", nargs="*")
    t = sub.add_parser("table")
    t.add_argument("jsonl")
    t.add_argument("--columns", nargs="*", help="only the columns naming one of these")
    t.add_argument("--f1-only", action="store_true")
    args = ap.parse_args()
    {"run": run, "score": score, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
