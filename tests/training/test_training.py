"""Training on a tiny network: the loss goes down, and a resumed run is bit-exact."""

from __future__ import annotations

import numpy as np
import pytest

from model.network import NetworkConfig
from model.training.dataset import PatchDataset
from model.training.loop import TrainOptions, make_model, train
from model.training.patches import TrainingData
from model.training.trainer import CHECKPOINT_FILE

TINY = NetworkConfig(T=8, H=32, W=32, N=2, dense_widths=(4, 2))
pytestmark = pytest.mark.slow


def _options(out, **kw) -> TrainOptions:
    base = {"out_dir": out, "config": TINY, "epochs": 2, "steps_per_epoch": 2, "val_count": 0,
            "progress": False, "seed": 3, "data": TrainingData()}
    return TrainOptions(**{**base, **kw})


def test_two_steps_decrease_the_loss(tmp_path) -> None:
    model = make_model(_options(tmp_path))
    x, y = PatchDataset(TINY, TrainingData(), steps=1, seed=1).batch(0, 0)
    seen = []
    for _ in range(3):  # the loss reported by step k is computed before step k's update
        model.reset_metrics()
        seen.append(float(model.train_on_batch(x, y, return_dict=True)["total"]))
    assert seen[2] < seen[0]


def _arrays(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files if k != "header"}


def test_resume_is_bit_exact(tmp_path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_options(straight, epochs=2))
    train(_options(resumed, epochs=1))
    rows = train(_options(resumed, epochs=2, resume=True))
    assert [r["epoch"] for r in rows] == [2]
    a, b = _arrays(straight / CHECKPOINT_FILE), _arrays(resumed / CHECKPOINT_FILE)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    lines = (resumed / "metrics.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch,loss_total")
    assert sorted(p.name for p in (resumed / "epochs").iterdir()) == [
        "001.weights.h5", "002.weights.h5"]
    assert _h5_arrays(resumed / "epochs" / "002.weights.h5") == _h5_arrays(
        resumed / "model.weights.h5")


def _h5_arrays(path) -> dict[str, bytes]:
    import h5py

    out: dict[str, bytes] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()].tobytes())
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def test_resume_refuses_other_settings(tmp_path) -> None:
    train(_options(tmp_path, epochs=1))
    with pytest.raises(ValueError, match="steps_per_epoch"):
        train(_options(tmp_path, epochs=2, steps_per_epoch=3, resume=True))
