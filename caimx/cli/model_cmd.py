"""``caimx model export``, ``caimx model refresh`` and ``caimx models``: make, update and list
installed models.

TensorFlow is imported only inside ``model export`` and ``model refresh``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_LICENSE = "MIT"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``model`` group (``model export``, ``model list``) and ``models``."""
    group = subparsers.add_parser("model", help="export and inspect installed models")
    group_sub = group.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    group.set_defaults(func=lambda _args: _print_help(group))

    export = group_sub.add_parser(
        "export",
        help="build the network, load weights and install it as a SavedModel folder",
        description="Build the LSTM-ISTA network of a preset, load weights (the authors' "
        "Keras-2 .h5 or a Keras 3 .weights.h5) and write <models-dir>/<name>/ with "
        "saved_model/, model_card.json, model.weights.h5 and the licence file.",
    )
    export.add_argument("--weights", required=True, type=Path,
                        help="published Keras-2 model .h5 or a Keras 3 .weights.h5")
    export.add_argument("--preset", default="mini", choices=("mini", "full"))
    export.add_argument("--name", required=True, help="installed model name, e.g. deepcaimx-mini")
    export.add_argument("--version", default="1.0.0")
    export.add_argument("--models-dir", type=Path, default=None,
                        help="where to install (default: CAIMX_MODELS_DIR)")
    export.add_argument("--training-data", default=None,
                        help="one line on what the weights were trained on")
    export.add_argument("--license", default=DEFAULT_LICENSE, help="SPDX licence of the weights")
    export.add_argument("--license-file", type=Path, default=None,
                        help="licence text copied beside the weights")
    export.add_argument("--input-scaling", default=None,
                        choices=("movie-range", "minmax-per-patch"),
                        help="what the weights were trained on (model card input_scaling); "
                        "default: movie-range for the published Keras-2 .h5, minmax-per-patch "
                        "for a .weights.h5 from model/training/")
    export.add_argument("--force", action="store_true", help="replace an existing folder")
    export.set_defaults(func=_export)

    refresh = group_sub.add_parser(
        "refresh",
        help="write an installed model's SavedModel again from its Keras weights",
        description="Rewrite <models-dir>/<name>/saved_model/ from the folder's "
        "model.weights.h5 and card (both unchanged), with this version's signatures: a model "
        "installed by an older version gains serving_compact, which workers use to skip the "
        "denoised movie and sum the attention maps on the device.",
    )
    refresh.add_argument("name", help="installed model name, e.g. caimx-mini")
    refresh.add_argument("--models-dir", type=Path, default=None,
                         help="folder of installed models (default: CAIMX_MODELS_DIR)")
    refresh.set_defaults(func=_refresh)

    listing = group_sub.add_parser("list", help="list installed models (same as `caimx models`)")
    _add_list_options(listing)

    models = subparsers.add_parser("models", help="list installed models and their cards")
    _add_list_options(models)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="folder of installed models (default: CAIMX_MODELS_DIR)")
    parser.add_argument("--json", action="store_true", help="print the cards as JSON")
    parser.set_defaults(func=_list)


def _models_dir(args: argparse.Namespace) -> Path:
    if args.models_dir is not None:
        return args.models_dir
    from caimx.settings import get_settings

    return get_settings().models_dir


def _list(args: argparse.Namespace) -> int:
    from model.registry import list_models

    models_dir = _models_dir(args)
    cards = list_models(models_dir)
    if args.json:
        print(json.dumps([card.to_dict() for card in cards], indent=2))
        return 0
    if not cards:
        print(f"no models installed in {models_dir}")
        return 0
    print(f"models in {models_dir}:")
    for card in cards:
        print(f"  {card.name}  v{card.version}  preset {card.preset}  "
              f"T={card.T} {card.H}x{card.W} N={card.N}  {card.parameters:,} parameters  "
              f"licence {card.license}  created {card.created}")
        print(f"      input {card.input_scaling}, trace frame i = input frame "
              f"i+{card.trace_offset}; trained on: {card.training_data}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from caimx.cli import CliError

    if not args.weights.is_file():
        raise CliError(f"weights file not found: {args.weights}")
    if args.license_file is not None and not args.license_file.is_file():
        raise CliError(f"licence file not found: {args.license_file}")
    from model.export import PUBLISHED_TRAINING_DATA, export_from_weights
    from model.network import PRESETS
    from model.weights_import import WeightImportError

    models_dir = _models_dir(args)
    published = not args.weights.name.endswith(".weights.h5")
    training_data = args.training_data or (PUBLISHED_TRAINING_DATA if published else "unknown")
    input_scaling = args.input_scaling or ("movie-range" if published else "minmax-per-patch")
    try:
        path = export_from_weights(
            PRESETS[args.preset], args.weights, models_dir,
            name=args.name, preset=args.preset, version=args.version,
            training_data=training_data, license=args.license,
            license_file=args.license_file, overwrite=args.force,
            input_scaling=input_scaling,
        )
    except (FileExistsError, WeightImportError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    print(f"installed {args.name} in {path}")
    return 0


def _refresh(args: argparse.Namespace) -> int:
    from caimx.cli import CliError
    from model.registry import ModelCardError, UnknownModelError, resolve_model

    try:
        installed = resolve_model(args.name, _models_dir(args))
    except UnknownModelError as exc:
        raise CliError(str(exc)) from exc
    from model.export import refresh_saved_model

    try:
        path = refresh_saved_model(installed.path)
    except (ModelCardError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc
    print(f"refreshed {args.name}: {path}")
    return 0
