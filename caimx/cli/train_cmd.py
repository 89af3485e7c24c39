"""``caimx train``: train or fine-tune the network on simulated patches."""

from __future__ import annotations

import argparse
from pathlib import Path

from caimx.cli.simulate_cmd import INDICATOR_CHOICES


def register(subparsers) -> None:
    """Add ``caimx train``."""
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune the network on simulated movies",
        description="Train the LSTM-ISTA network on simulated patches scaled as the engine scales "
                    "real ones. Checkpoints every epoch into --out; --resume continues exactly. "
                    "Fine-tune with --init-from and your microscope's --indicator/--fps/"
                    "--pixel-size.",
    )
    p.add_argument("--preset", default="mini", choices=("mini", "full"))
    p.add_argument("--epochs", type=int, default=10, help="total epochs (a resume counts the done)")
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--out", required=True, help="output folder (checkpoint, weights, metrics.csv)")
    p.add_argument("--init-from", help="start from these weights (.weights.h5 or published .h5)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--indicator", choices=INDICATOR_CHOICES, help="simulated indicator")
    p.add_argument("--fps", type=float, help="simulated frame rate, Hz")
    p.add_argument("--pixel-size", type=float, help="simulated pixel size, um")
    p.add_argument("--photons", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="range of photons per pixel per frame (SNR) of the training patches")
    p.add_argument("--input-scaling", choices=("minmax-per-patch", "movie-range"),
                   help="how patches are scaled for the network (the model card's input_scaling;"
                        " default minmax-per-patch; movie-range to fine-tune the published "
                        "weights in the scaling they were trained with)")
    p.add_argument("--freeze-bn", action="store_true",
                   help="keep BatchNormalization statistics fixed (fine-tuning with small batches)")
    p.add_argument("--val-count", type=int, default=48, help="held-out validation patches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace):
    """The :class:`~model.training.loop.TrainOptions` the arguments describe."""
    from model.training.loop import TrainOptions
    from model.training.patches import TrainingData

    base = {k: v for k, v in (("indicator", args.indicator), ("fps", args.fps),
                              ("pixel_size_um", args.pixel_size)) if v is not None}
    data = TrainingData().with_(**base)
    if args.photons:
        data = data.with_(photons=tuple(args.photons))
    if args.input_scaling:
        data = data.with_(input_scaling=args.input_scaling)
    return TrainOptions(
        out_dir=Path(args.out), preset=args.preset, epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        learning_rate=args.lr, seed=args.seed,
        init_from=Path(args.init_from) if args.init_from else None, resume=args.resume,
        data=data, val_count=args.val_count, freeze_batchnorm=args.freeze_bn,
        progress=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    """Train; print the last epoch's validation metrics."""
    from caimx.cli import CliError

    if args.init_from and not Path(args.init_from).exists():
        raise CliError(f"--init-from: no such file {args.init_from}")
    try:
        options = options_from_args(args)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    from model.training.loop import train

    try:
        rows = train(options)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if rows:
        last = rows[-1]
        print(f"epoch {last['epoch']}: loss {last['loss_total']:.4g}, "
              f"val F1 {last.get('val_f1', float('nan')):.3f}, "
              f"Dice {last.get('val_dice', float('nan')):.3f}, "
              f"trace r {last.get('val_trace_r', float('nan')):.3f}, "
              f"false positives per empty patch {last.get('val_fp_per_empty', float('nan')):.2f}")
    else:
        print(f"nothing to do: {options.out_dir} already holds {options.epochs} epochs")
    print(f"weights: {Path(args.out) / 'model.weights.h5'}")
    return 0
