"""Rescore the caimx results kept by ``benchmarks/suite2p_compare.py`` with the fluorescence read
from the movie (``model.inference.extract``) instead of the network's traces.

For results made before finalize read fluorescence: the footprints are taken from each kept
``caimx.zarr``, the motion reference is made from the movie as ``prepare`` makes it, and the same
scorer (``model.evaluate``) matches neurons; "active" means true cells that fire.

    .venv/bin/python benchmarks/fluorescence_rescore.py /tmp/caimx-suite2p-final
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.evaluate import evaluate
from model.inference import motion
from model.inference.extract import NeuropilRing, extract_fluorescence
from model.inference.params import MotionParams
from model.inference.source import as_movie
from model.results import read_result


def _active_r(matches: list, found: np.ndarray, truth: np.ndarray, active: np.ndarray) -> float:
    rs = [np.corrcoef(found[a], truth[b])[0, 1] for a, b in matches if active[b]]
    return round(float(np.mean(rs)), 2) if rs else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="--out folder of suite2p_compare.py run")
    args = parser.parse_args()
    coefficient = NeuropilRing().coefficient
    for movie_dir in sorted(p for p in args.folder.iterdir() if (p / "caimx.zarr").is_dir()):
        result = read_result(movie_dir / "caimx.zarr")
        truth = np.load(movie_dir / "movie.gt.npz")
        movie = tifffile.imread(next((movie_dir / "movie").glob("*.tif")))
        reference = motion.reference_image(as_movie(movie), params=MotionParams())
        f, fneu = extract_fluorescence(movie, np.asarray(result.footprints), reference=reference,
                                       motion_params=MotionParams())  # fmt: skip
        corrected = f - coefficient * fneu
        active = ~truth["silent"].astype(bool)
        network = evaluate(result.footprints, truth["masks"], found_traces=result.traces,
                           true_traces=truth["traces"])  # fmt: skip
        read = evaluate(result.footprints, truth["masks"], found_traces=corrected,
                        true_traces=truth["traces"])  # fmt: skip
        print(json.dumps({
            "movie": movie_dir.name, "f1": round(network.f1, 2),
            "trace_r_network": round(network.trace_r, 2),
            "trace_r_fluorescence": round(read.trace_r, 2),
            "active_r_network": _active_r(network.matches, np.asarray(result.traces),
                                          truth["traces"], active),
            "active_r_fluorescence": _active_r(read.matches, corrected, truth["traces"], active),
        }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
