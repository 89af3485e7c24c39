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
