"""The ``caimx`` command: one entry point, one small module per sub-command group.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, which adds its
sub-commands and sets ``func`` on them. Heavy imports (TensorFlow, FastAPI) happen inside the
command functions, so ``caimx --help`` stays fast and the API process never loads TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from caimx import __version__

COMMAND_MODULES: tuple[str, ...] = (
    "caimx.cli.serve_cmd",
    "caimx.cli.cleanup_cmd",
    "caimx.cli.users_cmd",
    "caimx.cli.model_cmd",
    "caimx.cli.process_cmd",
    "caimx.cli.export_cmd",
    "caimx.cli.client_cmd",
    "caimx.cli.simulate_cmd",
    "caimx.cli.train_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caimx",
        description="Calcium-imaging movies to neuron footprints and traces (LSTM-ISTA network).",
    )
    parser.add_argument("--version", action="version", version=f"caimx {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"caimx: error: {exc}", file=sys.stderr)
        return 2


def add_reading_options(parser: argparse.ArgumentParser) -> None:
    """``--plane``, ``--channel`` and ``--dataset``: how to read a movie (``source`` of a job)."""
    parser.add_argument("--plane", type=int, default=None,
                        help="z-plane of a ScanImage fast-z file or a hyperstack, from 0 "
                             "(default 0)")
    parser.add_argument("--channel", type=int, default=None,
                        help="channel of a ScanImage, hyperstack or Scanbox file, from 0")
    parser.add_argument("--dataset", default=None,
                        help="the movie's dataset in an HDF5 file, TwoPhotonSeries in an NWB "
                             "file, or array in a Zarr group")


class CliError(Exception):
    """A user-facing error: printed as one line, no traceback."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
