"""Recompute the transient SNR of every candidate in a work folder, without the network.

A candidate's SNR is read from the movie at chunk time (``decide.patch_candidates``). To compare
ways of measuring it on movies whose network run took long, this reads each chunk's block of
frames again (the same reading, motion correction and smoothing as the run), measures the stored
candidates with ``snr_neuropil_coefficient`` COEF, and writes the chunk results, SNRs replaced,
into a copy of the work folder; finalize that copy (``model.inference.engine.finalize``) to score
the decisions. With the coefficient of the run, the SNRs come back bit for bit.

    .venv/bin/python benchmarks/recompute_snr.py WORK COPY MOVIE --coefficient 1.0
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

import numpy as np

from model.inference import patches, resample
from model.inference.chunks import read_chunk, write_chunk
from model.inference.decide import corrected_traces, pixel_major, transient_snrs
from model.inference.engine import load_plan, motion_reference
from model.inference.params import InferenceParams
from model.inference.source import as_movie
from model.io import open_movie


def candidate_snrs(block: patches.Block, candidates, coefficient: float, offset: int,
                   length: int) -> np.ndarray:
    """What ``patch_candidates`` measures for each stored candidate of one chunk."""
    placed = []
    for i in range(len(candidates)):
        y, x, h, w = (int(v) for v in candidates.bbox[i])
        start, stop = candidates.mask_offsets[i], candidates.mask_offsets[i + 1]
        placed.append((candidates.masks[start:stop].reshape(h, w) > 0, y - block.y0,
                       x - block.x0))
    traces = corrected_traces(pixel_major(block.data), block.data.shape[1:], placed,
                              coefficient)[:, offset:offset + length]
    return transient_snrs(traces).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path, help="work folder of a run (plan.json, chunks/)")
    ap.add_argument("copy", type=Path, help="where the copy goes (replaced)")
    ap.add_argument("movie", type=Path, help="the movie the run read")
    ap.add_argument("--coefficient", type=float, required=True,
                    help="snr_neuropil_coefficient to measure with")
    args = ap.parse_args()
    shutil.rmtree(args.copy, ignore_errors=True)
    shutil.copytree(args.work, args.copy)
    plan = load_plan(args.copy)
    params = InferenceParams.from_dict(plan.params)
    reference = motion_reference(plan, args.copy)
    movie = resample.network_movie(as_movie(open_movie(args.movie)), plan.temporal_bin,
                                   plan.spatial_scale)
    changed = 0.0
    for chunk in plan.chunks:
        result = read_chunk(args.copy, chunk.id)
        if not len(result.candidates):
            continue
        tiles = tuple(plan.tiles[i] for i in chunk.tiles)
        block = patches.read_block(movie, plan, chunk.window, tiles, reference=reference,
                                   motion_params=params.motion,
                                   sigma=params.scaling.spatial_sigma)
        snr = candidate_snrs(block, result.candidates, args.coefficient, plan.trace_offset,
                             plan.trace_length)
        changed = max(changed, float(np.abs(snr - result.candidates.snr).max()))
        write_chunk(args.copy, dataclasses.replace(
            result, candidates=dataclasses.replace(result.candidates, snr=snr)))
    print(f"{args.copy}: {len(plan.chunks)} chunks, largest SNR change {changed:.3f}")


if __name__ == "__main__":
    main()
