"""``caimx simulate``: write a simulated movie (TIFF or Zarr) and its ground truth."""

from __future__ import annotations

import argparse
import sys
import time

INDICATOR_CHOICES = ("GCaMP6f", "GCaMP6s", "GCaMP7f", "GCaMP8m")


def register(subparsers) -> None:
    """Add ``caimx simulate``."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate a two-photon movie with ground truth",
        description="Simulate a calcium-imaging movie (TIFF or Zarr) and write its ground truth "
                    "beside it as <name>.gt.npz (see docs/simulation.md).",
    )
    p.add_argument("-o", "--output", required=True, help="movie path: .tif, .tiff or .zarr")
    p.add_argument("--size", type=int, default=512, help="field of view, pixels (square)")
    p.add_argument("--height", type=int, help="field of view height (overrides --size)")
    p.add_argument("--width", type=int, help="field of view width (overrides --size)")
    p.add_argument("--frames", type=int, default=2000, help="number of frames")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate, Hz")
    p.add_argument("--pixel-size", type=float, default=1.0, help="pixel size, um")
    p.add_argument("--photons", "--snr", dest="photons", type=float, default=4.0,
                   help="photons per pixel per frame at the neuropil mean (the SNR knob)")
    p.add_argument("--density", type=float, default=800.0, help="somata per mm^2")
    p.add_argument("--silent-fraction", type=float, default=0.3, help="fraction of silent cells")
    p.add_argument("--soma-separation", type=float, default=None, metavar="F",
                   help="smallest distance of two soma centres as a fraction of their summed radii "
                        "(default: the simulator's; 0 places cells independently, so they may "
                        "overlap to any extent)")
    p.add_argument("--indicator", choices=INDICATOR_CHOICES, default="GCaMP6f")
    p.add_argument("--motion", type=float, default=0.0, help="rigid motion sigma, um (0: none)")
    p.add_argument("--processes", type=float, default=0.0,
                   help="fraction of cells with dendrite-like processes")
    p.add_argument("--dtype", choices=("float32", "uint16"), default="uint16")
    p.add_argument("--no-noise", action="store_true", help="write the noise-free movie")
    p.add_argument("--clean", help="also write the noise-free movie to this path")
    p.add_argument("--truth", help="ground-truth path (default: <name>.gt.npz beside the movie)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def params_from_args(args: argparse.Namespace):
    """The :class:`~model.simulate.SimulationParams` the arguments describe."""
    from model.simulate import SimulationParams

    given = {} if args.soma_separation is None else {"soma_separation": args.soma_separation}
    return SimulationParams(
        height=args.height or args.size, width=args.width or args.size, frames=args.frames,
        fps=args.fps, pixel_size_um=args.pixel_size, photons=args.photons,
        density_per_mm2=args.density, silent_fraction=args.silent_fraction,
        indicator=args.indicator, motion_um=args.motion, process_fraction=args.processes,
        dtype=args.dtype, noise=not args.no_noise, seed=args.seed, **given)


def run(args: argparse.Namespace) -> int:
    """Simulate and write; print where the movie and its ground truth went."""
    from caimx.cli import CliError
    from model.simulate import ground_truth_path, write_simulation

    try:
        params = params_from_args(args)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"\rsimulating: {done}/{total} frames", end="", file=sys.stderr, flush=True)

    try:
        truth = write_simulation(params, args.output, truth_path=args.truth,
                                 clean_path=args.clean, progress=progress)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    print(file=sys.stderr)
    gt = args.truth or ground_truth_path(args.output)
    active = int((~truth.silent).sum())
    print(f"{args.output}: {params.frames} x {params.height} x {params.width} {params.dtype}, "
          f"{truth.count} cells ({active} active), {time.perf_counter() - start:.1f} s")
    print(f"ground truth: {gt}")
    return 0
