"""``caimx process`` (movie to result group, offline) and ``caimx evaluate`` (score a result)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from caimx.cli import add_reading_options


def register(subparsers) -> None:
    """Add ``process`` and ``evaluate``."""
    p = subparsers.add_parser(
        "process", help="find neurons and traces in a movie (offline, no server)",
        description="Run the inference engine on one movie and write a Zarr v3 result group.")
    p.add_argument("movie", help="movie file or folder (TIFF, HDF5, NWB, .npy, Zarr...), or an "
                   "fsspec URL (s3://bucket/key.tif, https://...) read by range requests")
    p.add_argument("-o", "--output", type=Path, required=True, help="result folder (RESULT.zarr)")
    p.add_argument("--model", default=None, help="installed model name (default from settings)")
    p.add_argument("--models-dir", type=Path, default=None, help="folder of installed models")
    p.add_argument("--tile", type=int, default=None, help="tile edge in pixels (model patch size)")
    p.add_argument("--overlap", type=int, default=None, help="pixels shared by neighbouring tiles")
    p.add_argument("--window-overlap", type=int, default=None, help="frames shared by windows")
    p.add_argument("--shifted-tiling", action="store_true",
                   help="also run the network on a second grid of tiles half a stride off "
                        "(recall +0.02-0.03 on simulated movies, about 1.8x the network time)")
    p.add_argument("--batch-size", type=int, default=None, help="patches per network call")
    p.add_argument("--runtime", choices=("savedmodel", "keras"), default=None,
                   help="run the model's TensorFlow SavedModel (default from settings) or its "
                        "Keras weights on the active Keras backend (KERAS_BACKEND=jax for a GPU)")
    p.add_argument("--read-ahead", type=int, default=None, metavar="N",
                   help="chunks read and motion-corrected in threads while the network runs "
                        "(default from settings; a GPU needs several)")
    p.add_argument("--candidate-threads", type=int, default=None, metavar="N",
                   help="threads that turn the network's outputs into candidates while it runs "
                        "(default from settings; a GPU needs several)")
    p.add_argument("--batches-in-flight", type=int, default=None, metavar="N",
                   help="network batches left running while an earlier one's outputs are "
                        "collected (Keras runtime on JAX; default from settings)")
    p.add_argument("--deconvolve-processes", type=int, default=None, metavar="N",
                   help="processes that fit the calcium traces of a long movie (default from "
                        "settings; 0: one per core, at most 8)")
    p.add_argument("--no-motion-correction", action="store_true",
                   help="skip rigid motion correction (already registered movies)")
    p.add_argument("--denoised", action="store_true", help="also store the denoised movie")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate (Hz) of a file that records none")
    p.add_argument("--temporal-bin", type=int, default=None, metavar="N",
                   help="average N consecutive frames before the network (traces come back "
                        "for every frame)")
    p.add_argument("--match-frame-rate", action="store_true",
                   help="bin frames to the model card's frame rate (needs the movie's fps)")
    p.add_argument("--spatial-scale", type=float, default=None, metavar="F",
                   help="resize frames by F before the network (footprints come back at the "
                        "movie's resolution)")
    p.add_argument("--rescale", action="store_true",
                   help="resize frames so somata have the model's trained size (needs "
                        "--pixel-size and a model card with pixel_size_um, neuron_diameter_um)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="the movie's pixel edge in micrometres")
    p.add_argument("--neuron-diameter", type=float, default=None, metavar="UM",
                   help="typical soma diameter in this movie (default: the model card's)")
    add_reading_options(p)
    p.add_argument("--soma-diameter", type=float, default=None, metavar="PX",
                   help="typical soma diameter in pixels (default: estimated from the movie); "
                        "frames are resized so somata have the model's trained size")
    p.add_argument("--params", type=Path, default=None,
                   help="JSON file of inference parameters (as stored in a result's attributes)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_process)

    e = subparsers.add_parser(
        "evaluate", help="score a result against ground truth",
        description="Precision, recall, F1 (Hungarian matching, IoU >= 0.5 on binarized "
                    "footprints), mean IoU and the trace Pearson r of matched neurons.")
    e.add_argument("result", type=Path, help="result folder written by `caimx process`")
    e.add_argument("--gt", type=Path, required=True,
                   help="ground truth: .npz with 'masks' or 'footprints' (K,H,W) and optional "
                        "'traces' (K,T), or another result folder")
    e.add_argument("--min-iou", type=float, default=0.5, help="smallest IoU of a match")
    e.add_argument("--traces", choices=TRACE_KINDS, default="auto",
                   help="which traces to correlate: the network's ('traces'), the "
                        "neuropil-corrected fluorescence read from the movie "
                        "('fluorescence' - coefficient * 'neuropil'), that fluorescence "
                        "with overlapping cells demixed by their footprints, or its "
                        "OASIS-denoised 'calcium'; auto (default): calcium, else "
                        "fluorescence, else network, whichever the result has first")  # fmt: skip
    e.add_argument("--min-visible", type=float, default=None, metavar="FRACTION",
                   help="leave out true cells whose visible share (the ground truth's "
                        "'visible_fraction') is under FRACTION, e.g. 0.5 for cells mostly "
                        "outside the frame: finding one is neither a match nor a false "
                        "detection (default: every cell counts)")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=run_evaluate)


TRACE_KINDS = ("auto", "network", "fluorescence", "demixed", "calcium")


def _params(args: argparse.Namespace, settings: Any):
    import dataclasses

    from model.inference.params import InferenceParams, MotionParams, PlanParams, ResampleParams

    base = InferenceParams()
    if args.params is not None:
        base = InferenceParams.from_dict(json.loads(args.params.read_text(encoding="utf-8")))
    plan = base.plan
    overlap = args.overlap if args.overlap is not None else settings.tile_overlap
    window_overlap = (args.window_overlap if args.window_overlap is not None
                      else settings.window_overlap)
    plan = PlanParams(**{**plan.__dict__, "tile": args.tile or settings.tile_size,
                         "tile_overlap": overlap, "window_overlap": window_overlap,
                         "shifted_tiling": args.shifted_tiling or plan.shifted_tiling})
    motion = base.motion
    if args.no_motion_correction:
        motion = MotionParams(**{**motion.__dict__, "enabled": False})
    given = {key: value for key, value in (
        ("temporal_bin", args.temporal_bin), ("spatial_scale", args.spatial_scale),
        ("pixel_size_um", args.pixel_size), ("neuron_diameter_um", args.neuron_diameter),
        ("match_frame_rate", args.match_frame_rate or None), ("rescale", args.rescale or None),
        ("soma_diameter_px", args.soma_diameter),
    ) if value is not None}  # fmt: skip
    resample = ResampleParams(**{**base.resample.__dict__, **given})
    return dataclasses.replace(
        base, motion=motion, plan=plan, resample=resample,
        batch_size=args.batch_size or settings.batch_size,
        read_ahead=args.read_ahead if args.read_ahead is not None else settings.read_ahead,
        candidate_threads=(args.candidate_threads if args.candidate_threads is not None
                           else settings.candidate_threads),
        batches_in_flight=(args.batches_in_flight if args.batches_in_flight is not None
                           else settings.batches_in_flight),
        deconvolve_processes=(args.deconvolve_processes if args.deconvolve_processes is not None
                              else settings.deconvolve_processes),
        write_denoised=args.denoised or base.write_denoised)


def _on_accelerator(params: Any, args: argparse.Namespace, settings: Any, runtime: str) -> Any:
    """``params`` with batch size and threads chosen for a GPU when the runtime computes on one
    and the user did not set them (flags or ``CAIMX_*``: the CPU defaults would leave a GPU
    mostly idle)."""
    import dataclasses
    import os

    from model.runtimes import TUNED_FOR_ACCELERATOR, accelerator_choices

    unset = {key for key in TUNED_FOR_ACCELERATOR
             if getattr(args, key) is None and key not in settings.model_fields_set}
    device, chosen = accelerator_choices(runtime, unset, os.cpu_count() or 1)
    if chosen and not args.quiet:
        print(f"{device} found: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v
                                              in chosen.items())
              + " (give them to choose otherwise)", file=sys.stderr)
    return dataclasses.replace(params, **chosen)


def _open_movie(args: argparse.Namespace, settings: Any, **options: Any):
    """The movie named on the command line: a local file or folder, or a URL, read with the
    protocol's options from ``CAIMX_REMOTE_OPTIONS`` and credentials from the environment."""
    from caimx.remote import is_url, storage_options
    from model.io import open_movie

    options.update(plane=args.plane, channel=args.channel, dataset=args.dataset)
    if is_url(args.movie):
        return open_movie(args.movie, **options,
                          storage_options=storage_options(args.movie, settings.remote_options))
    return open_movie(Path(args.movie), **options)


def run_process(args: argparse.Namespace) -> int:
    from caimx.cli import CliError
    from caimx.settings import get_settings

    settings = get_settings()
    from caimx.memory import limit_malloc_arenas

    limit_malloc_arenas(settings.malloc_arena_max)  # before the engine's threads start
    from tqdm import tqdm

    from model.inference import process_movie
    from model.inference.resample import describe
    from model.io import MovieFormatError
    from model.registry import UnknownModelError, resolve_model
    from model.runtimes import load_predictor

    try:
        params = _params(args, settings)
        installed = resolve_model(args.model or settings.default_model,
                                  args.models_dir or settings.models_dir)
    except (UnknownModelError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    try:
        movie = _open_movie(args, settings, fps=args.fps)
    except (MovieFormatError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc
    runtime = args.runtime or settings.model_runtime
    params = _on_accelerator(params, args, settings, runtime)
    predictor = load_predictor(installed.path, runtime, batch_size=params.batch_size)
    if not args.quiet:  # e.g. whether JAX found the GPU
        print(f"network: {predictor.card.name} ({predictor.runtime})", file=sys.stderr)
    n_frames = int(movie.shape[0])
    bar = tqdm(total=n_frames, unit="frame", disable=args.quiet, file=sys.stderr,
               desc=movie.path.name)

    def progress(done: int, total: int) -> None:
        bar.update(round(n_frames * done / total) - bar.n)

    try:
        with movie:
            summary = process_movie(movie, predictor, output=args.output, params=params,
                                    progress=progress)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    finally:
        bar.close()
    print(f"{summary.n_neurons} neurons in {movie.path.name} ({summary.movie_shape[0]} frames, "
          f"{summary.frames_per_s:.1f} frames/s) -> {args.output}")
    if summary.adapted:
        print("adapted to the movie: " + describe(summary.adapted))
    print("stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary.seconds.items()))
    if summary.chunk_seconds:
        print("  chunks: " + ", ".join(f"{k} {v:.1f} s"
                                       for k, v in summary.chunk_seconds.items()))
    return 0


def _load_truth(path: Path, min_visible: float | None = None):
    """``(masks, traces, ignore)`` of the ground truth at ``path``; ``ignore`` marks the cells
    whose visible share of the soma is under ``min_visible`` (None without it)."""
    import numpy as np

    from model.results import read_result

    if path.suffix == ".npz":
        with np.load(path) as data:
            key = "masks" if "masks" in data else "footprints"
            if key not in data:
                raise ValueError(f"{path} holds neither 'masks' nor 'footprints'")
            traces = data.get("traces", None)
            ignore = None
            if min_visible is not None:
                if "visible_fraction" not in data:
                    raise ValueError(f"{path} has no 'visible_fraction' per cell, which "
                                     "--min-visible needs (`caimx simulate` writes it)")
                ignore = data["visible_fraction"] < min_visible
            return data[key], traces, ignore
    if min_visible is not None:
        raise ValueError("--min-visible needs a ground-truth .npz with 'visible_fraction'")
    result = read_result(path)
    return result.footprints > 0, result.traces, None


def run_evaluate(args: argparse.Namespace) -> int:
    from caimx.cli import CliError
    from model.evaluate import evaluate
    from model.results import read_result

    try:
        result = read_result(args.result)
        masks, traces, ignore = _load_truth(args.gt, args.min_visible)
        kind = args.traces
        if kind == "auto":
            kind = ("calcium" if result.calcium is not None else
                    "fluorescence" if result.corrected is not None else "network")
        found = {"network": lambda: result.traces, "fluorescence": lambda: result.corrected,
                 "demixed": lambda: result.demixed, "calcium": lambda: result.calcium,
                 }[kind]()  # fmt: skip
        if found is None:
            raise ValueError(f"{args.result} has no {args.traces} traces (made before they were "
                             "read from the movie, or without oasis-deconv for calcium); use "
                             "--traces network")  # fmt: skip
        score = evaluate(result.footprints, masks, found_traces=found,
                         true_traces=traces, min_iou=args.min_iou, ignore=ignore)
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps({**score.to_dict(), "traces": kind}))
        return 0
    print(f"found {score.n_found}, true {score.n_true}, matched {score.n_matched}")
    if ignore is not None:
        print(f"ignored: {score.n_ignored_true} true cells under {args.min_visible:g} visible, "
              f"{score.n_ignored_found} found neurons matched to them")
    print(f"precision {score.precision:.3f}  recall {score.recall:.3f}  F1 {score.f1:.3f}")
    print(f"mean IoU {score.mean_iou:.3f}  trace r {score.trace_r:.3f} "
          f"({kind} traces, over {score.n_trace_pairs} matched cells that fire)")
    return 0
