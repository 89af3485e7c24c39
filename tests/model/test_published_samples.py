"""The published DeepCaImX samples through ``caimx process`` give the bare network's neurons.

Each sample is one network patch (100 frames of 32 x 32, values already in the network's [0, 1]
units): the engine must feed it to the network as it is (no intensity map, smoothing, resizing,
padding or motion correction) and keep the network's answer through its decisions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest_network import load_sample

from caimx.cli import main
from model.results import read_result

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "model" / "zoo"


@pytest.fixture(scope="module")
def published():
    from model.serving import SavedModelPredictor

    return SavedModelPredictor.load(MODELS / "deepcaimx-mini")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2, 3])
def test_caimx_process_keeps_the_network_answer(k, published, tmp_path):
    sample = load_sample(k)
    movie = tmp_path / f"sample{k}.npy"
    np.save(movie, sample.video.astype(np.float32))
    out = tmp_path / "result.zarr"
    assert main(["process", str(movie), "-o", str(out), "--model", "deepcaimx-mini",
                 "--models-dir", str(MODELS), "--quiet"]) == 0
    result = read_result(out)
    bare = published.predict(sample.video[None])
    channels = [n for n in range(bare.footprints.shape[1]) if (bare.footprints[0, n] > 0.5).any()]
    assert len(result.footprints) == len(channels) == k - 1  # sample k holds k - 1 neurons
    adapted = result.attrs["resample"]
    assert adapted["spatial_scale"] == 1.0 and adapted["temporal_bin"] == 1
    assert adapted["input"].startswith("as given")
    for n in channels:
        dices = [_dice(fp, bare.footprints[0, n]) for fp in result.footprints]
        best = int(np.argmax(dices))
        assert dices[best] >= 0.9, dices
        # output frame i of the network is input frame i + 2
        r = np.corrcoef(result.traces[best, 2:98], bare.traces[0, n])[0, 1]
        assert r >= 0.95, r
