"""Throughput and peak memory of ``process_movie`` against the bare network, on movies on disk.

Each measurement runs in a fresh process (peak RSS is per process). For every length a uint16
``.npy`` movie is written, opened lazily with ``model.io.open_movie`` and processed; the bare
network is timed on the same number of patches. A flat peak RSS across lengths shows that memory is
bounded by the window, not by the movie length.

    .venv/bin/python benchmarks/engine.py --size 64 --frames 400 800
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "model" / "zoo" / "deepcaimx-mini"


def write_movie(path: Path, frames: int, size: int, seed: int = 0) -> None:
    """A uint16 movie with a few blinking cells, written block by block (never whole in memory)."""
    rng = np.random.default_rng(seed)
    movie = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(frames, size, size))
    yy, xx = np.mgrid[:size, :size]
    cells = [((yy - y) ** 2 + (xx - x) ** 2 <= 36) for y, x in rng.uniform(8, size - 8, (12, 2))]
    for t0 in range(0, frames, 100):
        t1 = min(frames, t0 + 100)
        block = rng.poisson(200.0, (t1 - t0, size, size)).astype(np.float64)
        for cell in cells:
            block += (rng.random(t1 - t0) < 0.05)[:, None, None] * 300.0 * cell
        movie[t0:t1] = np.clip(block, 0, 65535).astype(np.uint16)
    movie.flush()
    del movie


def child(movie_path: str, mode: str, batch_size: int) -> dict:
    from model.inference import InferenceParams, process_movie
    from model.inference.params import MotionParams, PlanParams
    from model.inference.plan import make_plan
    from model.io import open_movie
    from model.serving import SavedModelPredictor

    predictor = SavedModelPredictor.load(MODEL)
    card = predictor.card
    with open_movie(movie_path) as movie:
        shape = tuple(movie.shape)
        plan = make_plan(shape, patch=card.patch_shape, trace_offset=card.trace_offset,
                         params=PlanParams(), movie_low=0.0, movie_high=1.0)
        n_patches = len(plan.windows) * len(plan.tiles)
        predictor.predict(np.zeros((1, *card.patch_shape), np.float32))  # warm up
        t0 = time.perf_counter()
        if mode == "engine":
            params = InferenceParams(batch_size=batch_size, motion=MotionParams(enabled=False))
            with tempfile.TemporaryDirectory() as tmp:
                summary = process_movie(movie, predictor, output=Path(tmp) / "r.zarr",
                                        params=params)
            extra = {"n_neurons": summary.n_neurons, "phases_s": summary.seconds}
        else:
            rng = np.random.default_rng(0)
            per_window = len(plan.tiles)  # the engine batches within one window's tiles
            for _ in plan.windows:
                for first in range(0, per_window, batch_size):
                    count = min(batch_size, per_window - first)
                    predictor.predict(rng.random((count, *card.patch_shape), dtype=np.float32))
            extra = {}
    seconds = time.perf_counter() - t0
    return {"mode": mode, "shape": list(shape), "n_patches": n_patches, "seconds": seconds,
            "frames_per_s": shape[0] / seconds, "peak_rss_mb":
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, nargs="+", default=[400, 800])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--child", nargs=2, metavar=("MOVIE", "MODE"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.batch_size)))
        return
    print(json.dumps({"machine": platform.platform(), "cpu": platform.processor(),
                      "python": platform.python_version(),
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}))
    with tempfile.TemporaryDirectory() as tmp:
        for frames in args.frames:
            path = Path(tmp) / f"movie_{frames}.npy"
            write_movie(path, frames, args.size)
            for mode in ("engine", "network"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(path), mode,
                     "--batch-size", str(args.batch_size)],
                    capture_output=True, text=True, check=True, cwd=ROOT)
                print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
