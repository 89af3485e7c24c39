"""Compare trained weights on a held-out simulated set, per SNR level.

The benchmark set uses its own seed (never a training or validation stream) and one fixed photon
level per block of patches (1/6 empty, 1/6 silent-only, the rest active)::

    python -m model.training.benchmark \
        --weights published=model/zoo/deepcaimx-mini/model.weights.h5 \
        --weights finetuned=runs/ft/best.weights.h5 --count 36 --json bench.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.network import PRESETS, NetworkConfig
from model.training.patches import PatchSample, TrainingData
from model.training.validation import (
    PatchOutputs,
    held_out_set,
    keras_predictor,
    predict_samples,
    score_patches,
)

BENCH_SEED = 7_000_001
SNR_LEVELS = (1.0, 4.0, 16.0)
COLUMNS = ("f1", "precision", "recall", "dice", "trace_r", "fp_per_empty", "empty_with_fp",
           "fp_per_silent", "n_true")


def benchmark_sets(data: TrainingData, config: NetworkConfig, *, count: int,
                   levels: Sequence[float] = SNR_LEVELS, seed: int = BENCH_SEED
                   ) -> dict[float, list[PatchSample]]:
    """``count`` held-out patches per photon level (seeds ``seed + level index``)."""
    return {lvl: held_out_set(data, count=count, frames=config.T, size=(config.H, config.W),
                              n_channels=config.N, seed=seed + i, photons=lvl)
            for i, lvl in enumerate(levels)}


def score_weights(weights: Path, config: NetworkConfig,
                  sets: dict[float, list[PatchSample]]) -> dict[str, dict[str, float]]:
    """Scores of one set of weights: per level and pooled (``"all"``)."""
    from model.export import load_weights
    from model.network import build_network

    net = build_network(config)
    load_weights(net, config, weights)
    predict = keras_predictor(net)
    results, samples, outputs = {}, [], []
    for level, patches in sets.items():
        out = predict_samples(predict, patches)
        results[f"{level:g}"] = score_patches(patches, out)
        samples += patches
        outputs.append(out)
    pooled = PatchOutputs(masks=np.concatenate([o.masks for o in outputs]),
                          traces=np.concatenate([o.traces for o in outputs]))
    results["all"] = score_patches(samples, pooled)
    return results


def markdown_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row per (weights, photon level)."""
    head = "| weights | photons | " + " | ".join(COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, per_level in results.items():
        for level, m in per_level.items():
            cells = " | ".join(f"{m[c]:.3g}" for c in COLUMNS)
            rows.append(f"| {name} | {level} | {cells} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", action="append", required=True,
                        metavar="NAME=PATH[:SCALING]",
                        help="weights to score; SCALING is the card's input_scaling "
                             "(default minmax-per-patch)")
    parser.add_argument("--preset", default="mini", choices=sorted(PRESETS))
    parser.add_argument("--count", type=int, default=36, help="patches per photon level")
    parser.add_argument("--levels", type=float, nargs="+", default=list(SNR_LEVELS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    config = PRESETS[args.preset]
    results = {}
    for item in args.weights:
        name, _, spec = item.partition("=")
        path, _, scaling = spec.partition(":")
        data = TrainingData(input_scaling=scaling or "minmax-per-patch")
        sets = benchmark_sets(data, config, count=args.count, levels=args.levels)
        results[name] = score_weights(Path(path), config, sets)
        print(f"{name}: all {json.dumps(results[name]['all'])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(markdown_table(results))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
