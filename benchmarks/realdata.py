"""caimx and Suite2p side by side on a real, labelled recording (the Neurofinder development movie).

``run`` processes the movie with ``caimx process`` (its defaults: nothing about the movie is
given) and with Suite2p under each settings variant of ``SUITE2P_VARIANTS`` (its own venv, as in
``benchmarks/suite2p_compare.py``), each in a fresh process, and appends one JSON line per tool
and variant to ``--out``. ``table`` prints the Markdown table of those lines; ``figure`` draws the
mean and correlation images with the labelled, caimx's and one Suite2p run's outlines.

Scores: ``model.evaluate`` (binarized footprints, IoU >= 0.5, Hungarian matching) against the
labels, over the whole movie and over its two halves, a neuron belonging to the half that holds
its centroid's column: the **left** half (columns < W/2) is where caimx's rules and thresholds
were chosen, the **right** half was not looked at while choosing. The labels are incomplete
(active unlabelled cells exist), so precision is a lower bound.

    python3.11 -m venv .benchvenv/suite2p && .benchvenv/suite2p/bin/pip install suite2p
    .venv/bin/python benchmarks/realdata.py run --out realdata.jsonl
    .venv/bin/python benchmarks/realdata.py table realdata.jsonl
    .venv/bin/python benchmarks/realdata.py figure realdata.jsonl --out docs/images/realdata.png

The recording and its labels are not part of caimx (``../shared/data/neurofinder-dev``, see its
README); ``--data`` names another folder with ``movie.tif`` and ``gt_masks.npz``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from suite2p_compare import RUNNER, SUITE2P_PYTHON, run_child, suite2p_outputs  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "neurofinder-dev"
#: What the recording is known to be (its README): GCaMP6s at about 7.5 Hz, somata about 9 px.
FS, TAU, DIAMETER = 7.5, 1.25, 9.0
#: Suite2p settings tried (merged over ``suite2p_runner.settings_for``'s defaults with the
#: recording's fs, tau and diameter). Anatomical detection (cellpose) is not among them: its
#: weights are downloaded at first use, which this benchmark's machines cannot do.
SUITE2P_VARIANTS: dict[str, dict[str, Any]] = {
    "sparsery": {},
    "sparsery, spatial_scale auto": {"detection": {"sparsery_settings": {"spatial_scale": 0}}},
    "sparsery, threshold_scaling 0.5": {"detection": {"threshold_scaling": 0.5}},
    "sparsery, threshold_scaling 0.25": {"detection": {"threshold_scaling": 0.25}},
    "sourcery": {"detection": {"algorithm": "sourcery"}},
    "sourcery, threshold_scaling 0.5": {"detection": {"algorithm": "sourcery",
                                                      "threshold_scaling": 0.5}},
    "sourcery, threshold_scaling 2": {"detection": {"algorithm": "sourcery",
                                                    "threshold_scaling": 2.0}},
    "sourcery, diameter 12": {"detection": {"algorithm": "sourcery"}, "diameter": [12.0, 12.0]},
}
SCORES = ("n_found", "n_true", "n_matched", "precision", "recall", "f1", "mean_iou")


def halves(masks: np.ndarray) -> np.ndarray:
    """True for the masks whose centroid lies in the left half of the frame."""
    width = masks.shape[2]
    cols = np.array([np.nonzero(m)[1].mean() if m.any() else -1.0 for m in masks])
    return cols < width / 2


def scores(footprints: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, Any]]:
    """``model.evaluate`` scores over the whole frame and each half."""
    from model.evaluate import evaluate

    found = np.asarray(footprints) > 0
    out = {}
    for name, pick_found, pick_true in (
            ("all", slice(None), slice(None)),
            ("left", halves(found), halves(labels)),
            ("right", ~halves(found), ~halves(labels))):
        s = evaluate(found[pick_found], labels[pick_true])
        out[name] = {k: getattr(s, k) for k in SCORES}
    return out


def run(args: argparse.Namespace) -> None:
    from model.results import read_result

    data = Path(args.data)
    labels = np.load(data / "gt_masks.npz")["masks"]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    base = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "movie": str(data / "movie.tif"), "machine": f"{os.cpu_count()} cores"}
    if not args.skip_caimx:
        caimx = [sys.executable, "-c", "import sys; from caimx.cli import main; sys.exit(main())"]
        c = run_child([*caimx, "process", str(data / "movie.tif"), "-o",
                       str(work / "caimx.zarr"), "--quiet", *args.caimx_args], work, "caimx")
        result = read_result(work / "caimx.zarr")
        row = {**base, "tool": " ".join(["caimx", *args.caimx_args]),
               "result": str(work / "caimx.zarr"), "wall_s": c["wall_s"],
               "peak_rss_mb": c["peak_rss_mb"], "adapted": result.attrs.get("resample"),
               **scores(result.footprints, labels)}
        _append(out, row)
    if args.skip_suite2p:
        return
    if not SUITE2P_PYTHON.is_file():
        raise SystemExit(f"no Suite2p venv at {SUITE2P_PYTHON}; see this script's docstring")
    movie_dir = work / "suite2p-movie"
    movie_dir.mkdir(exist_ok=True)
    link = movie_dir / "movie.tif"
    if not link.exists():
        link.symlink_to((data / "movie.tif").resolve())
    for name, settings in SUITE2P_VARIANTS.items():
        if args.variants and name not in args.variants:
            continue
        target = work / ("suite2p-" + "".join(ch if ch.isalnum() else "_" for ch in name))
        cmd = [str(SUITE2P_PYTHON), str(RUNNER), str(movie_dir), str(target), "--fs", str(FS),
               "--tau", str(TAU), "--diameter", str(settings.get("diameter", [DIAMETER])[0]),
               "--settings", json.dumps(settings)]
        s = run_child(cmd, target, "suite2p")
        info = json.loads(s["stdout"].strip().splitlines()[-1])
        got = suite2p_outputs(Path(info["plane_dir"]), labels.shape[1:], 1, info["no_rois"])
        for cells_only in (False, True):
            fps = got["footprints"][got["iscell"]] if cells_only else got["footprints"]
            _append(out, {**base, "tool": f"Suite2p {info['suite2p']}, {name}"
                          + (", iscell only" if cells_only else ""),
                          "settings": settings, "plane_dir": info["plane_dir"],
                          "no_rois": info["no_rois"], "wall_s": s["wall_s"],
                          "peak_rss_mb": s["peak_rss_mb"], **scores(fps, labels)})


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=float) + "\n")
    print(f"{row['tool']}: F1 all {row['all']['f1']:.3f}, left {row['left']['f1']:.3f}, "
          f"right {row['right']['f1']:.3f}", flush=True)


def table(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines() if line]
    print("| tool, settings | ROIs | left half (chosen on): P / R / F1 | right half (held out): "
          "P / R / F1 | whole: P / R / F1 | mean IoU |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[h]['precision']:.2f} / {r[h]['recall']:.2f} / **{r[h]['f1']:.3f}**"
                 for h in ("left", "right", "all")]
        print(f"| {r['tool']} | {r['all']['n_found']} | " + " | ".join(cells)
              + f" | {r['all']['mean_iou']:.2f} |")


def figure(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage import measure

    from model.results import read_result

    rows = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines() if line]
    ours = next(r for r in reversed(rows) if r["tool"].startswith("caimx"))
    theirs = max((r for r in rows if r["tool"].startswith("Suite2p") and not r.get("no_rois")),
                 key=lambda r: r["all"]["f1"], default=None)
    result = read_result(ours["result"])
    labels = np.load(Path(args.data) / "gt_masks.npz")["masks"]
    outlines = [(labels, "#33dd33", "labels"), (result.footprints > 0, "#ff3333", "caimx")]
    if theirs is not None:
        got = suite2p_outputs(Path(theirs["plane_dir"]), labels.shape[1:], 1, False)
        fps = got["footprints"][got["iscell"]] if "iscell only" in theirs["tool"] else (
            got["footprints"])
        outlines.append((fps > 0, "#33ccff", theirs["tool"]))
    fig, axes = plt.subplots(1, 2, figsize=(16, 8.6))
    for ax, key in zip(axes, ("mean_image", "correlation_image"), strict=True):
        image = result.images[key]
        lo, hi = np.percentile(image, [1, 99.5])
        ax.imshow(np.clip((image - lo) / (hi - lo), 0, 1), cmap="gray")
        for masks, colour, _ in outlines:
            for mask in masks:
                for c in measure.find_contours(mask.astype(float), 0.5):
                    ax.plot(c[:, 1], c[:, 0], color=colour, lw=0.9)
        ax.axvline(labels.shape[2] / 2 - 0.5, color="yellow", lw=0.6, ls="--")
        ax.set_title(key.replace("_", " "))
        ax.axis("off")
    fig.legend(handles=[plt.Line2D([], [], color=c, label=n) for _, c, n in outlines],
               loc="lower center", ncol=len(outlines))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(args.out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True, help="JSON lines file (appended)")
    r.add_argument("--data", default=str(DATA))
    r.add_argument("--work", default="/tmp/caimx-realdata")
    r.add_argument("--caimx-args", nargs=argparse.REMAINDER, default=[],
                   help="arguments after `caimx process MOVIE -o OUT --quiet` (last option)")
    r.add_argument("--skip-caimx", action="store_true")
    r.add_argument("--skip-suite2p", action="store_true")
    r.add_argument("--variants", nargs="*", help="Suite2p variants to run (default: all)")
    t = sub.add_parser("table")
    t.add_argument("jsonl")
    f = sub.add_parser("figure")
    f.add_argument("jsonl")
    f.add_argument("--data", default=str(DATA))
    f.add_argument("--out", required=True)
    args = ap.parse_args()
    {"run": run, "table": table, "figure": figure}[args.cmd](args)


if __name__ == "__main__":
    main()
