"""Time stitching alone: a :class:`~model.inference.finalize.Stitcher` fed every chunk result of a
kept work folder (``benchmarks/long_movie.py --keep-work``), then ``finish``.

Stitching runs on the thread that writes the chunks, during the chunk pass, and holds the
interpreter lock: on a GPU host the thread feeding the device waits while it runs. The digest
printed with each run covers every neuron's footprint sums, segments, tile counts and SNR and the
four summary images, so two commits can be compared for the same result as well as for time.

    .venv/bin/python benchmarks/stitching.py /tmp/long/chunks --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def stitched_digest(neurons: list, images: dict[str, np.ndarray]) -> str:
    """SHA-256 over every neuron's footprint sums and box, segments, tile counts and SNR, and the
    summary images: equal digests, equal stitching."""
    digest = hashlib.sha256()
    for neuron in neurons:
        digest.update(np.asarray(neuron.total.box, np.int64).tobytes())
        digest.update(np.ascontiguousarray(neuron.total.values).tobytes())
        digest.update(np.ascontiguousarray(neuron.count.values).tobytes())
        for window in sorted(neuron.segments):
            digest.update(np.int64(window).tobytes())
            digest.update(np.ascontiguousarray(neuron.segments[window]).tobytes())
        digest.update(np.array([neuron.detected, neuron.covering], np.int64).tobytes())
        digest.update(np.float64(neuron.snr).tobytes())
    for name in sorted(images):
        digest.update(np.ascontiguousarray(images[name]).tobytes())
    return digest.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path, help="a kept work folder (plan and chunk results)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from model.inference import InferenceParams, load_plan
    from model.inference.chunks import read_chunk
    from model.inference.finalize import Stitcher

    plan = load_plan(args.work)
    params = InferenceParams.from_dict(plan.params)
    results = [read_chunk(args.work, chunk.id) for chunk in plan.chunks]  # read before the clock
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        stitcher = Stitcher(plan, params)
        for result in results:
            stitcher.add(result)
        windows_s = time.perf_counter() - t0
        neurons, n_candidates = stitcher.finish()
        total_s = time.perf_counter() - t0
        print(json.dumps({
            "movie_shape": list(plan.movie_shape), "windows": len(plan.windows),
            "chunks": len(plan.chunks), "candidates": n_candidates, "neurons": len(neurons),
            "windows_s": round(windows_s, 3), "finish_s": round(total_s - windows_s, 3),
            "total_s": round(total_s, 3),
            "digest": stitched_digest(neurons, stitcher.images.finish())}))


if __name__ == "__main__":
    main()
