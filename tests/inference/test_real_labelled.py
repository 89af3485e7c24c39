"""A crop of the real, labelled development recording through ``caimx process`` with its defaults.

The recording (a Neurofinder training movie with manual labels, GCaMP6s at about 7.5 Hz) is not
shipped with caimx: its imaging data carry no licence that allows it. The test reads it from the
``shared`` folder beside the checkout (``CAIMX_NEUROFINDER_DEV`` names another) and is skipped,
saying so, where it is absent; everywhere it runs it is what keeps real-data accuracy from sliding
back (``benchmarks/realdata.py`` measures the whole movie, ``docs/accuracy.md``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from caimx.cli import main
from model.evaluate import evaluate, iou_matrix
from model.inference.plan import origins
from model.results import read_result

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("CAIMX_NEUROFINDER_DEV", REPO.parent / "shared/data/neurofinder-dev"))
#: rows 128-223, columns 0-95 (the half on which the rules were chosen), the first 300 frames
CROP = (slice(0, 300), slice(128, 224), slice(0, 96))


@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    if not (DATA / "movie.tif").is_file():
        pytest.skip(f"the labelled real recording is not beside the checkout ({DATA}); it is not "
                    "shipped with caimx (its imaging data carry no licence)")
    folder = tmp_path_factory.mktemp("neurofinder")
    movie = tifffile.imread(DATA / "movie.tif")[CROP]
    tifffile.imwrite(folder / "crop.tif", movie)
    labels = np.load(DATA / "gt_masks.npz")["masks"]
    inside = labels[:, CROP[1], CROP[2]]
    keep = inside.sum(axis=(1, 2)) >= 0.5 * labels.sum(axis=(1, 2))  # at least half in the crop
    out = folder / "result.zarr"
    assert main(["process", str(folder / "crop.tif"), "-o", str(out), "--quiet"]) == 0
    return read_result(out), inside[keep]


@pytest.mark.slow
def test_defaults_find_the_labelled_somata(crop):
    result, labels = crop
    score = evaluate(result.footprints, labels)
    # measured 0.378 (precision 0.50, recall 0.30; 23 labelled somata); the network alone found
    # a third as many
    assert score.f1 >= 0.33, score
    adapted = result.attrs["resample"]
    assert adapted["soma_diameter_from"] == "estimated from the mean image"
    assert 7.0 <= adapted["soma_diameter_px"] <= 12.0  # the labels' median is 9 px
    found_by = result.neurons["found_by"]
    assert set(found_by.tolist()) == {1, 2}  # the network's neurons and dim somata


@pytest.mark.slow
def test_cells_across_tile_borders_come_out_whole(crop):
    """Labelled cells that no tile holds whole are found whole, and no footprint is a
    rectangle cut along a tile's border."""
    result, labels = crop
    starts = origins(labels.shape[1], 32, 4)

    def inside_one_tile(mask: np.ndarray) -> bool:
        ys, xs = np.nonzero(mask)
        return (any(a <= ys.min() and ys.max() < a + 32 for a in starts)
                and any(a <= xs.min() and xs.max() < a + 32 for a in starts))

    found = result.footprints > 0
    straddling = [j for j in range(len(labels)) if not inside_one_tile(labels[j])]
    assert len(straddling) >= 3
    matched = iou_matrix(found, labels[straddling]).max(axis=0) >= 0.5
    assert matched.sum() >= 2, matched  # measured 2 of 7
    interior = {s for s in starts if s > 0} | {s + 31 for s in starts if s + 32 < 96}
    for footprint in found:
        ys, xs = np.nonzero(footprint)
        fill = len(ys) / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
        sides = {int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())}
        assert fill <= 0.9 or not sides & interior, (fill, sides)
