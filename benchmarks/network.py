"""Forward-pass throughput and peak memory of the LSTM-ISTA network, Keras vs SavedModel.

Every (preset, runner, batch) runs in its own process, so the peak resident memory
(``ru_maxrss``) belongs to that configuration alone. Weights are random (speed does not depend
on them); the SavedModel of each preset is exported once into a temporary folder.

    .venv/bin/python benchmarks/network.py                       # mini and full, batch 1 4 16
    .venv/bin/python benchmarks/network.py --presets mini --batches 1 4 --repeats 3

"512x512 frames/s" converts patch throughput to whole frames of a 512x512 movie tiled without
overlap: ``patches/s * T / ((512 / H) * (512 / W))``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FRAME = 512


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(preset: str, runner: str, batch: int, repeats: int, saved: str) -> dict:
    """Time one configuration in this process; returns a result row."""
    import numpy as np

    from model.network import PRESETS

    config = PRESETS[preset]
    x = np.random.default_rng(0).random((batch, config.T, config.H, config.W, 1), np.float32)
    if runner == "keras":
        from model.network import build_network

        model = build_network(config)

        def call() -> None:
            model.predict_on_batch(x)
    else:
        from model.serving import SavedModelPredictor

        predictor = SavedModelPredictor.load(saved)

        def call() -> None:
            predictor.predict(x[..., 0])

    baseline = _rss_mb()
    start = time.perf_counter()
    call()  # warm-up: tracing and first allocation
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    best = min(times)
    patches_per_s = batch / best
    tiles = (FRAME / config.H) * (FRAME / config.W)
    return {
        "preset": preset,
        "runner": runner,
        "batch": batch,
        "first_call_s": round(first, 2),
        "best_call_s": round(best, 3),
        "median_call_s": round(sorted(times)[len(times) // 2], 3),
        "patches_per_s": round(patches_per_s, 3),
        "frames512_per_s": round(patches_per_s * config.T / tiles, 3),
        "peak_rss_mb": round(_rss_mb()),
        "peak_over_loaded_mb": round(_rss_mb() - baseline),
    }


def _export(preset: str, folder: Path) -> Path:
    from model.export import write_model_dir
    from model.network import PRESETS, build_network

    config = PRESETS[preset]
    return write_model_dir(
        build_network(config), config, folder, name=f"bench-{preset}", preset=preset,
        version="0", training_data="random weights (benchmark)", license="MIT",
    )


def _run_child(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, __file__, *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(rows: list[dict]) -> str:
    head = ("| preset | runner | batch | patches/s | 512x512 frames/s | best call (s) "
            "| first call (s) | peak RSS (MB) | peak over loaded (MB) |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['runner']} | {r['batch']} | "
                         f"not run: {r['error']} | | | | | |")
            continue
        lines.append(
            f"| {r['preset']} | {r['runner']} | {r['batch']} | {r['patches_per_s']:.3g} | "
            f"{r['frames512_per_s']:.3g} | {r['best_call_s']:.3g} | {r['first_call_s']:.3g} | "
            f"{r['peak_rss_mb']} | {r['peak_over_loaded_mb']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["mini", "full"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--runners", nargs="+", default=["savedmodel", "keras"],
                        choices=["savedmodel", "keras"])
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the warm-up")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="configurations not to run, as preset:batch (e.g. full:16)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--child", nargs=5, metavar=("PRESET", "RUNNER", "BATCH", "REPEATS",
                                                     "SAVED"), help=argparse.SUPPRESS)
    parser.add_argument("--export-child", nargs=2, metavar=("PRESET", "DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        preset, runner, batch, repeats, saved = args.child
        print(json.dumps(_measure(preset, runner, int(batch), int(repeats), saved)))
        return 0
    if args.export_child:
        print(json.dumps({"path": str(_export(args.export_child[0],
                                              Path(args.export_child[1])))}))
        return 0

    print(f"# {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            saved = ""
            if "savedmodel" in args.runners:
                saved = _run_child(["--export-child", preset, tmp], args.timeout).get("path", "")
            for batch in args.batches:
                for runner in args.runners:
                    if f"{preset}:{batch}" in args.skip:
                        row = {"error": "skipped"}
                    else:
                        child = ["--child", preset, runner, str(batch), str(args.repeats), saved]
                        row = _run_child(child, args.timeout)
                    row = {"preset": preset, "runner": runner, "batch": batch, **row}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")
    print(_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
