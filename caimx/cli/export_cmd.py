"""``caimx export``: write a result group as NWB, a Suite2p folder, or TIFF + CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXPORT_FORMATS = ("nwb", "suite2p", "tiff")


def register(subparsers) -> None:
    """Add ``export``."""
    p = subparsers.add_parser(
        "export", help="write a result as NWB, a Suite2p folder, or footprints.tif + traces.csv",
        description="Write a result group (RESULT.zarr) in a format other tools open: 'nwb' (one "
                    "NWB file), 'suite2p' (suite2p/plane0/*.npy for the Suite2p GUI), 'tiff' "
                    "(footprints.tif for ImageJ, traces.csv for spreadsheets).",
    )
    p.add_argument("result", type=Path, help="result folder written by caimx (RESULT.zarr)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder to write into")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="nwb", help="default: nwb")
    p.add_argument("--fs", type=float, default=None,
                   help="frames per second (default: the rate recorded with the movie)")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from caimx.cli import CliError
    from model.exports import export_result, load_source

    try:
        written = export_result(args.result, args.output, format=args.format, fs=args.fs)
        source = load_source(args.result, fs=args.fs)
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from exc
    if not source.fs_known:
        print("caimx: the movie recorded no frame rate; times are in frames (fs = 1). "
              "Pass --fs to set it.", file=sys.stderr)
    print(f"{source.result.n_neurons} neurons, {args.format} -> {written}")
    return 0
