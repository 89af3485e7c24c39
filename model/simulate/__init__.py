"""Simulated two-photon calcium-imaging movies with exact ground truth (numpy only).

Entry points: :class:`SimulationParams`, :func:`simulate` (in memory), :func:`write_simulation`
(streamed to TIFF/Zarr plus ``<name>.gt.npz``) and :func:`load_ground_truth`. The generative
model and the file formats are described in ``docs/simulation.md``.
"""

from model.simulate.movie import GroundTruth, SimulatedMovie, simulate
from model.simulate.params import INDICATORS, Indicator, SimulationParams, parameter_table
from model.simulate.scene import Scene
from model.simulate.writers import (
    ground_truth_path,
    load_ground_truth,
    save_ground_truth,
    write_movie,
    write_simulation,
)

__all__ = [
    "INDICATORS",
    "GroundTruth",
    "Indicator",
    "Scene",
    "SimulatedMovie",
    "SimulationParams",
    "ground_truth_path",
    "load_ground_truth",
    "parameter_table",
    "save_ground_truth",
    "simulate",
    "write_movie",
    "write_simulation",
]
