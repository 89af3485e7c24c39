"""``caimx train`` argument handling (the training itself is tested in test_training.py)."""

from __future__ import annotations

from caimx.cli import build_parser, main
from caimx.cli.train_cmd import options_from_args


def test_train_options_from_arguments(tmp_path) -> None:
    args = build_parser().parse_args([
        "train", "--preset", "mini", "--epochs", "3", "--steps-per-epoch", "7", "--out",
        str(tmp_path), "--indicator", "GCaMP8m", "--fps", "15", "--pixel-size", "0.8",
        "--photons", "2", "20", "--resume"])
    opts = options_from_args(args)
    assert opts.epochs == 3 and opts.steps_per_epoch == 7 and opts.resume
    assert opts.data.base.indicator == "GCaMP8m" and opts.data.base.fps == 15.0
    assert opts.data.base.pixel_size_um == 0.8 and opts.data.photons == (2.0, 20.0)
    assert opts.network.T == 100 and opts.network.N == 4


def test_train_refuses_missing_init_weights(tmp_path, capsys) -> None:
    rc = main(["train", "--out", str(tmp_path), "--init-from", str(tmp_path / "nope.h5")])
    assert rc == 2 and "no such file" in capsys.readouterr().err


def test_freeze_bn_flag(tmp_path) -> None:
    args = build_parser().parse_args(["train", "--out", str(tmp_path), "--freeze-bn"])
    assert options_from_args(args).freeze_batchnorm


def test_input_scaling_flag(tmp_path) -> None:
    default = options_from_args(build_parser().parse_args(["train", "--out", str(tmp_path)]))
    args = build_parser().parse_args(["train", "--out", str(tmp_path),
                                      "--input-scaling", "movie-range"])
    assert default.data.input_scaling == "minmax-per-patch"
    assert options_from_args(args).data.input_scaling == "movie-range"
