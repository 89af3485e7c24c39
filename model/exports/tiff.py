"""Plain files for ImageJ/Fiji and spreadsheets: footprints.tif, traces.csv, neurons.csv.

- ``footprints.tif``: ImageJ hyperstack, one float32 slice per neuron ``(K, H, W)``.
- ``mean_image.tif``: the mean frame ``(H, W)`` float32, raw intensity units.
- ``correlation_image.tif``: each pixel's correlation with its neighbourhood ``(H, W)`` float32
  (results made before it was computed have none).
- ``traces.csv``: one row per frame: ``frame``, ``time_s``, then ``neuron_0 .. neuron_{K-1}``.
- ``neurons.csv``: one row per neuron: ``neuron``, ``centroid_y``, ``centroid_x``, ``area``,
  ``snr``, ``tile_evidence``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile

from model.exports.source import ExportSource


def write_tiff(source: ExportSource, folder: str | Path) -> Path:
    """Write the plain files into ``folder`` and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    result = source.result
    footprints = result.footprints.astype(np.float32)
    _, height, width = source.movie_shape
    stack = footprints if len(footprints) else np.zeros((1, height, width), np.float32)
    tifffile.imwrite(folder / "footprints.tif", stack, imagej=True,
                     metadata={"axes": "ZYX", "Labels": [f"neuron_{k}" for k in range(len(stack))]})
    for name in ("mean_image", "correlation_image"):
        if name in result.images:
            tifffile.imwrite(folder / f"{name}.tif", result.images[name].astype(np.float32),
                             imagej=True)
    n_frames = result.traces.shape[1]
    with (folder / "traces.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "time_s", *(f"neuron_{k}" for k in range(result.n_neurons))])
        for t in range(n_frames):
            writer.writerow([t, f"{t / source.fs:.6g}",
                             *(f"{v:.6g}" for v in result.traces[:, t])])
    centroid = source.neuron("centroid")
    with (folder / "neurons.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["neuron", "centroid_y", "centroid_x", "area", "snr", "tile_evidence"])
        for k in range(result.n_neurons):
            writer.writerow([k, f"{centroid[k, 0]:.3f}", f"{centroid[k, 1]:.3f}",
                             int(source.neuron("area")[k]), f"{source.neuron('snr')[k]:.4g}",
                             f"{source.neuron('tile_evidence')[k]:.4g}"])
    return folder
