"""caimx and Suite2p side by side: same simulated movies, same scorer, time and memory of each.

For every photon level (the simulator's SNR knob) and density, ``run`` simulates a movie with
``model.simulate`` (seeded, uint16 ImageJ TIFF, ground truth in ``.gt.npz``), then runs each tool in
its own fresh process:

- caimx: ``caimx process MOVIE -o RESULT --quiet``, i.e. the command line with its default model
  and default parameters (motion correction on);
- Suite2p: ``benchmarks/suite2p_runner.py`` in the Suite2p venv (its defaults with the movie's
  ``fs``, the indicator's decay as ``tau``, the soma diameter in pixels, rigid registration only).

Suite2p's ROIs become footprints (``K, H, W``; ``lam`` at ``ypix, xpix``) and traces
(``F - 0.7 * Fneu``); caimx's traces are the same measurement (its ``fluorescence - 0.7 *
neuropil``). "trace r calcium" scores both tools' traces after the same OASIS denoising
(``model.inference.deconvolve``; caimx's ``calcium`` array), so the comparison of traces is one of
footprints, not of post-processing. Both tools are scored by ``model.evaluate.evaluate``
against the soma masks and dF/F of every simulated cell (binarized footprints, IoU >= 0.5,
Hungarian matching; precision, recall, F1, mean IoU, Pearson r of the matched traces). Suite2p
is reported twice: all ROIs, and only those its built-in classifier calls cells (``iscell``; same
run, so same time and memory).
Two more views of the same matches: "recall (active)" is the matched share of the active cells
that lie at least half inside the frame (the others cannot show up in activity); "trace r
(active)" averages the trace r over matches of active cells only (a silent cell's true dF/F is
constant, which the scorer counts as r = 0, so finding silent cells lowers "trace r").
Wall time and peak RSS (``ru_maxrss`` from ``os.wait4``) are those of the tool's process,
start-up and imports included; "run s" is the tool's own processing time (caimx: what
``caimx process`` reports; Suite2p: ``run_s2p``). Nothing is tuned on these movies.

Suite2p is a benchmark dependency, not a runtime one; it gets its own venv (``.benchvenv/`` is
git-ignored). ``pip install suite2p`` brings torch from PyPI, a CUDA build, which runs on the CPU
here (``torch_device`` "cpu"); the CPU-only torch wheel alone does not do, since cellpose 4 (a
Suite2p dependency) imports torchvision, whose PyPI wheels need the CUDA build of torch:

    python3.11 -m venv .benchvenv/suite2p
    .benchvenv/suite2p/bin/pip install suite2p

Then (one JSON line per tool and movie is appended to ``--out``; the table is printed at the end;
``--caimx-src`` runs caimx from a snapshot of one commit instead of this checkout):

    git archive HEAD | tar -x -C /tmp/caimx-src
    .venv/bin/python benchmarks/suite2p_compare.py run --size 128 --frames 600 \\
        --photons 1 4 16 --densities 800 2000 --seed 1 --caimx-src /tmp/caimx-src \\
        --out suite2p_compare.jsonl
    .venv/bin/python benchmarks/suite2p_compare.py table suite2p_compare.jsonl

``suite2p MOVIE.tif ...`` and ``caimx MOVIE.tif ... [--caimx-args '--temporal-bin 4']`` run one
tool on movies simulated before (ground truth beside them), appending to the same kind of file.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "benchmarks" / "suite2p_runner.py"
SUITE2P_PYTHON = ROOT / ".benchvenv" / "suite2p" / "bin" / "python"
NEUROPIL_COEFFICIENT = 0.7
SCORES = ("n_true", "n_found", "n_matched", "precision", "recall", "f1", "mean_iou", "trace_r")


def run_child(cmd: list[str], log_dir: Path, name: str, *, cwd: Path = ROOT,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` in its own process; wall time and that process's peak RSS (``os.wait4``)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    load = os.getloadavg()[0]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{name} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s":
            usage.ru_utime + usage.ru_stime, "load_before": load, "stdout": stdout}


def suite2p_outputs(plane_dir: Path, shape: tuple[int, int], frames: int,
                    no_rois: bool) -> dict[str, np.ndarray]:
    """Suite2p's ROIs as footprints ``(K, H, W)`` and traces ``F - 0.7 * Fneu`` ``(K, T)``."""
    if no_rois:
        return {"footprints": np.zeros((0, *shape), np.float32),
                "traces": np.zeros((0, frames), np.float32), "iscell": np.zeros(0, bool)}
    stat = np.load(plane_dir / "stat.npy", allow_pickle=True)
    f = np.load(plane_dir / "F.npy")
    fneu = np.load(plane_dir / "Fneu.npy")
    iscell = np.load(plane_dir / "iscell.npy")
    footprints = np.zeros((len(stat), *shape), np.float32)
    for k, roi in enumerate(stat):
        footprints[k, roi["ypix"], roi["xpix"]] = roi["lam"]
    k = len(stat)  # arrays of an empty result may come back 1-D
    return {"footprints": footprints,
            "traces": (f - NEUROPIL_COEFFICIENT * fneu).reshape(k, -1),
            "iscell": iscell.reshape(k, -1)[:, 0] > 0 if k else np.zeros(0, bool)}


def score(footprints: np.ndarray, traces: np.ndarray, truth: Any) -> dict[str, Any]:
    """``model.evaluate`` scores, plus two views of the same matches restricted to active cells.

    ``recall_active``: matched share of the active cells at least half inside the frame.
    ``f1_visible``: F1 with the cells less than half inside the frame left out
    (``model.evaluate``'s ``ignore``: finding one is neither a match nor a false detection).
    ``trace_r_active``: mean trace r over the matches whose true cell spikes (a silent cell's true
    trace is constant, and ``model.evaluate.pearson`` counts it as r = 0).
    """
    from model.evaluate import evaluate, pearson

    s = evaluate(footprints, truth.masks, found_traces=traces, true_traces=truth.traces)
    findable = (~truth.silent) & (truth.visible_fraction >= 0.5)
    out = {k: getattr(s, k) for k in SCORES}
    out["n_active"] = int(findable.sum())
    out["recall_active"] = (sum(1 for _, j in s.matches if findable[j]) / int(findable.sum())
                            if findable.any() else float("nan"))
    visible = evaluate(footprints, truth.masks, ignore=truth.visible_fraction < 0.5)
    out["f1_visible"] = visible.f1
    rs = [pearson(traces[i], truth.traces[j]) for i, j in s.matches if not truth.silent[j]]
    out["n_matched_silent"] = sum(1 for _, j in s.matches if truth.silent[j])
    out["trace_r_active"] = float(np.mean(rs)) if rs else float("nan")
    return out


def with_calcium(row: dict[str, Any], footprints: np.ndarray, calcium: np.ndarray | None,
                 truth: Any) -> dict[str, Any]:  # fmt: skip
    """``row`` plus the trace r of ``calcium`` (the same matches): ``trace_r_calcium`` and
    ``trace_r_active_calcium`` (NaN without calcium)."""
    if calcium is None:
        return {**row, "trace_r_calcium": float("nan"), "trace_r_active_calcium": float("nan")}
    s = score(footprints, calcium, truth)
    return {**row, "trace_r_calcium": s["trace_r"], "trace_r_active_calcium": s["trace_r_active"]}


def oasis_calcium(traces: np.ndarray) -> np.ndarray | None:
    """The same OASIS denoising caimx applies (``model.inference.deconvolve``), for Suite2p's
    traces; ``None`` when ``oasis-deconv`` is not installed."""
    from model.inference import deconvolve

    return deconvolve.deconvolve_traces(traces)[0] if deconvolve.available() else None


def versions(suite2p_info: dict[str, Any] | None) -> dict[str, str]:
    v = {"python": platform.python_version(), "caimx": importlib.metadata.version("caimx"),
         "tensorflow-cpu": importlib.metadata.version("tensorflow-cpu"),
         "numpy": importlib.metadata.version("numpy")}
    if suite2p_info:
        v.update({k: suite2p_info[k] for k in ("suite2p", "torch", "cellpose")})
    return v


def caimx_row(movie: Path, work: Path, truth: Any, base: dict[str, Any], caimx_src: Path,
              extra_args: list[str]) -> dict[str, Any]:  # fmt: skip
    """``caimx process`` (the command line, default model and parameters plus ``extra_args``) in
    its own process from ``caimx_src``, scored against ``truth``."""
    from model.results import read_result

    caimx = [sys.executable, "-c", "import sys; from caimx.cli import main; sys.exit(main())"]
    env = {**os.environ, "PYTHONPATH": str(caimx_src)}
    c = run_child([*caimx, "process", str(movie), "-o", str(work / "caimx.zarr"), "--quiet",
                   *extra_args], work, "caimx", cwd=caimx_src, env=env)
    m = re.search(r"\(\d+ frames, ([\d.]+) frames/s\)", c["stdout"])
    run_s = truth.params.frames / float(m.group(1)) if m else float("nan")
    result = read_result(work / "caimx.zarr")
    traces = result.corrected if result.corrected is not None else result.traces
    tool = " ".join(["caimx", *extra_args])
    return with_calcium(
        {**base, "tool": tool, "model": result.attrs["model"]["name"],
         "caimx_src": str(caimx_src), **score(result.footprints, traces, truth),
         "wall_s": c["wall_s"], "run_s": run_s, "cpu_s": c["cpu_s"],
         "peak_rss_mb": c["peak_rss_mb"], "load_before": c["load_before"]},
        result.footprints, result.calcium, truth)


def run(args: argparse.Namespace) -> None:
    from model.simulate import SimulationParams, write_simulation

    caimx_src = Path(args.caimx_src).resolve()
    out_file = Path(args.out)
    work_root = Path(args.work)
    t_all = time.perf_counter()
    for photons in args.photons:
        for density in args.densities:
            params = SimulationParams(height=args.size, width=args.size, frames=args.frames,
                                      seed=args.seed, photons=photons, density_per_mm2=density,
                                      dtype="uint16")
            name = f"s{args.seed}-p{photons:g}-d{density:g}-{args.frames}x{args.size}"
            work = work_root / name
            shutil.rmtree(work, ignore_errors=True)
            movie_dir = work / "movie"  # the TIFF alone: Suite2p reads every TIFF in the folder
            movie = movie_dir / "movie.tif"
            truth = write_simulation(params, movie, truth_path=work / "movie.gt.npz")
            base = {"seed": args.seed, "photons": photons, "density": density,
                    "movie": [args.frames, args.size, args.size], "n_cells": truth.count}
            rows = [caimx_row(movie, work, truth, base, caimx_src, args.caimx_args.split())]
            rows += suite2p_rows(args.suite2p_python, movie_dir, work, truth, base)
            _append(out_file, name, truth, rows)
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s\n")
    print_table([json.loads(line) for line in out_file.read_text().splitlines() if line])


def suite2p_rows(suite2p_python: str, movie_dir: Path, work: Path, truth: Any,
                 base: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """Suite2p, in its own venv, on the one TIFF in ``movie_dir``: the rows of all its ROIs and
    of those its classifier keeps (``iscell``), scored against ``truth``."""
    from model.simulate import INDICATORS

    params = truth.params
    diameter = float(np.mean(params.soma_diameter_um)) / params.pixel_size_um
    s = run_child([suite2p_python, str(RUNNER), str(movie_dir), str(work / "s2p"),
                   "--fs", f"{params.fps:g}",
                   "--tau", f"{INDICATORS[params.indicator].decay_s:g}",
                   "--diameter", f"{diameter:g}"], work, "suite2p")
    info = json.loads(s["stdout"].strip().splitlines()[-1])
    s2p = suite2p_outputs(Path(info["plane_dir"]), (params.height, params.width), params.frames,
                          info["no_rois"])
    timing = {"wall_s": s["wall_s"], "run_s": info["run_s"], "cpu_s": s["cpu_s"],
              "peak_rss_mb": s["peak_rss_mb"], "load_before": s["load_before"],
              "rss_after_import_mb": info["rss_after_import_mb"]}
    calcium = oasis_calcium(s2p["traces"])
    keep = s2p["iscell"]
    rows = [
        with_calcium({**base, "tool": "suite2p (all ROIs)",
                      **score(s2p["footprints"], s2p["traces"], truth), **timing},
                     s2p["footprints"], calcium, truth),
        with_calcium({**base, "tool": "suite2p (iscell)",
                      **score(s2p["footprints"][keep], s2p["traces"][keep], truth), **timing},
                     s2p["footprints"][keep], None if calcium is None else calcium[keep], truth),
    ]
    for r in rows:
        r["versions"] = versions(info)
    return rows


def _append(out_file: Path, name: str, truth: Any, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        r["frames_per_s"] = truth.params.frames / r["wall_s"]
        r.setdefault("versions", versions(None))
    with out_file.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"{name}: {truth.count} cells; " + "; ".join(
        f"{r['tool']} F1 {r['f1']:.2f} in {r['wall_s']:.0f} s" for r in rows), flush=True)


def existing_movies(args: argparse.Namespace) -> None:
    """One tool (``args.tool``) on movies simulated before (``MOVIE.gt.npz`` beside each
    ``MOVIE.tif``), e.g. those of a long caimx run, which need not be simulated again."""
    from model.simulate import load_ground_truth

    out_file = Path(args.out)
    for movie in map(Path, args.movies):
        truth = load_ground_truth(movie)
        params = truth.params
        name = movie.stem
        work = Path(args.work) / name
        shutil.rmtree(work, ignore_errors=True)
        movie_dir = work / "movie"  # the TIFF alone: Suite2p reads every TIFF in the folder
        movie_dir.mkdir(parents=True)
        (movie_dir / "movie.tif").symlink_to(movie.resolve())
        base = {"seed": params.seed, "photons": params.photons,
                "density": params.density_per_mm2,
                "movie": [params.frames, params.height, params.width], "n_cells": truth.count}
        if args.tool == "suite2p":
            rows = suite2p_rows(args.suite2p_python, movie_dir, work, truth, base)
        else:
            rows = [caimx_row(movie_dir / "movie.tif", work, truth, base,
                              Path(args.caimx_src).resolve(), args.caimx_args.split())]
        _append(out_file, name, truth, rows)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _f(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN: no match


def print_table(rows: list[dict[str, Any]]) -> None:
    """One markdown row per tool and movie, in the order they were measured."""
    print("| tool | photons | density /mm^2 | true cells | found | precision | recall | F1 "
          "| F1 (>= half visible) | recall (active) | mean IoU | trace r | trace r (active) "
          "| trace r calcium (active) | wall s | run s | frames/s | peak RSS MB |")
    print("|" + "---|" * 18)
    for r in rows:
        cells = [r["tool"], f"{r['photons']:g}", f"{r['density']:g}", str(r["n_true"]),
                 str(r["n_found"]), _f(r["precision"]), _f(r["recall"]), _f(r["f1"]),
                 _f(r.get("f1_visible", float("nan"))), _f(r["recall_active"]),
                 _f(r["mean_iou"]) if r["n_matched"] else "-", _f(r["trace_r"]),
                 _f(r.get("trace_r_active", float("nan"))),
                 _f(r.get("trace_r_active_calcium", float("nan"))),
                 _f(r["wall_s"], 0), _f(r["run_s"], 0), _f(r["frames_per_s"], 1),
                 f"{r['peak_rss_mb']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    if rows:
        print("\nversions: " + ", ".join(f"{k} {v}" for k, v in rows[-1]["versions"].items()))


def main() -> None:
    caimx_options = argparse.ArgumentParser(add_help=False)
    caimx_options.add_argument(
        "--caimx-src", default=str(ROOT),
        help="source tree whose caimx runs (default: this checkout; a `git archive` of one "
             "commit keeps the measurement off work in progress)")
    caimx_options.add_argument(
        "--caimx-args", default="",
        help="more `caimx process` options, one string (e.g. '--temporal-bin 4'); the tool is "
             "then named with them")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--suite2p-python", default=str(SUITE2P_PYTHON),
                        help="python of the Suite2p venv")
    common.add_argument("--work", default="/tmp/caimx-suite2p", help="movies and outputs")
    common.add_argument("--keep", action="store_true", help="keep movies and outputs")
    common.add_argument("--out", required=True, help="JSON lines are appended here")

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", parents=[caimx_options, common],
                       help="simulate, run both tools, score, append JSON lines")
    r.add_argument("--size", type=int, default=128, help="frame height and width (pixels)")
    r.add_argument("--frames", type=int, default=600)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--photons", type=float, nargs="+", default=[1.0, 4.0, 16.0],
                   help="the simulator's SNR knob (photons per pixel per frame at the neuropil)")
    r.add_argument("--densities", type=float, nargs="+", default=[2000.0],
                   help="somata per mm^2")
    for tool in ("suite2p", "caimx"):
        o = sub.add_parser(tool, parents=[common, caimx_options] if tool == "caimx" else [common],
                           help=f"{tool} alone on simulated movies made before (MOVIE.gt.npz "
                                "beside each MOVIE.tif); append JSON lines")
        o.add_argument("movies", nargs="+", help="simulated TIFF movies")
        o.set_defaults(tool=tool)
    t = sub.add_parser("table", help="print the markdown table of a JSON-lines file")
    t.add_argument("file")
    args = ap.parse_args()
    if args.command == "run":
        run(args)
    elif args.command in ("suite2p", "caimx"):
        existing_movies(args)
    else:
        print_table([json.loads(line) for line in Path(args.file).read_text().splitlines()
                     if line])


if __name__ == "__main__":
    main()
