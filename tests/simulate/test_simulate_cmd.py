"""``caimx simulate`` writes a movie and its ground truth."""

from __future__ import annotations

import tifffile

from caimx.cli import main
from model.simulate import load_ground_truth


def test_simulate_command(tmp_path, capsys) -> None:
    out = tmp_path / "sim.tif"
    rc = main(["simulate", "-o", str(out), "--size", "40", "--frames", "70", "--snr", "8",
               "--indicator", "GCaMP8m", "--seed", "3", "--density", "2000"])
    assert rc == 0
    movie = tifffile.imread(out)
    assert movie.shape == (70, 40, 40) and movie.dtype.name == "uint16"
    truth = load_ground_truth(tmp_path / "sim.gt.npz")
    assert truth.params.indicator == "GCaMP8m" and truth.params.photons == 8.0
    assert truth.footprints.shape[1:] == (40, 40)
    assert "ground truth" in capsys.readouterr().out


def test_simulate_command_rejects_bad_values(tmp_path, capsys) -> None:
    rc = main(["simulate", "-o", str(tmp_path / "x.tif"), "--silent-fraction", "2"])
    assert rc == 2
    assert "silent_fraction" in capsys.readouterr().err


def test_simulate_command_defaults_are_the_simulators() -> None:
    """Without options the command simulates with SimulationParams' own defaults (only the file
    dtype differs: a microscope writes uint16), so the two never drift apart."""
    import dataclasses

    from caimx.cli import build_parser
    from caimx.cli.simulate_cmd import INDICATOR_CHOICES, params_from_args
    from model.simulate import INDICATORS, SimulationParams

    args = build_parser().parse_args(["simulate", "-o", "movie.tif"])
    assert params_from_args(args) == dataclasses.replace(SimulationParams(), dtype="uint16")
    assert set(INDICATOR_CHOICES) == set(INDICATORS)
