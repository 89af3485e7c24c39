"""The training loop: stream simulated batches, validate, checkpoint every epoch, resume exactly.

Output folder::

    checkpoint.npz       weights + optimizer state + header (epoch, seed, settings, history)
    model.weights.h5     network weights of the last epoch (for ``caimx model export``)
    best.weights.h5      network weights of the best validation F1 so far
    epochs/NNN.weights.h5  every epoch's weights (to choose one by a later, fuller evaluation)
    metrics.csv          one row per epoch: mean training losses and validation metrics
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
from tqdm import tqdm

from model.network import PRESETS, NetworkConfig, build_network
from model.training.dataset import PatchDataset
from model.training.patches import TrainingData
from model.training.trainer import (
    CHECKPOINT_FILE,
    LOSS_NAMES,
    TrainingModel,
    load_checkpoint,
    save_checkpoint,
)
from model.training.validation import (
    held_out_set,
    keras_predictor,
    predict_samples,
    score_patches,
)

METRICS_FILE = "metrics.csv"


@dataclass(frozen=True)
class TrainOptions:
    """One training run.

    ``init_from`` is a Keras ``.weights.h5`` or the published ``.h5`` (fine-tuning); ``resume``
    continues the checkpoint in ``out_dir`` and wins over ``init_from``. ``freeze_batchnorm``
    keeps every BatchNormalization layer in inference mode with fixed statistics (useful when
    fine-tuning with batches of 2).
    """

    out_dir: Path
    preset: str = "mini"
    config: NetworkConfig | None = None
    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 2
    learning_rate: float = 1e-3
    seed: int = 0
    init_from: Path | None = None
    resume: bool = False
    data: TrainingData = field(default_factory=TrainingData)
    val_count: int = 48
    freeze_batchnorm: bool = False
    progress: bool = True

    @property
    def network(self) -> NetworkConfig:
        """The network config (``config`` if given, else the preset)."""
        return self.config or PRESETS[self.preset]

    def header(self) -> dict[str, Any]:
        """Settings recorded in every checkpoint."""
        return {"preset": self.preset, "network": dataclasses.asdict(self.network),
                "steps_per_epoch": self.steps_per_epoch, "batch_size": self.batch_size,
                "learning_rate": self.learning_rate, "seed": self.seed,
                "init_from": str(self.init_from) if self.init_from else None,
                "freeze_batchnorm": self.freeze_batchnorm,
                "data": self.data.to_dict()}


def make_model(options: TrainOptions) -> TrainingModel:
    """Build (and optionally initialise) the network, wrapped and compiled for training."""
    keras.utils.set_random_seed(options.seed)
    net = build_network(options.network)
    if options.init_from is not None and not options.resume:
        from model.export import load_weights

        load_weights(net, options.network, options.init_from)
    if options.freeze_batchnorm:
        for layer in net.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    model = TrainingModel(net)
    model.compile(optimizer=keras.optimizers.Adam(options.learning_rate))
    return model


def train(options: TrainOptions) -> list[dict[str, float]]:
    """Train for ``options.epochs`` epochs (counting those already in a resumed checkpoint).

    Returns
    -------
    list of dict
        One row per epoch run now (the rows appended to ``metrics.csv``).
    """
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = make_model(options)
    start, best = 0, -1.0
    header = options.header()
    if options.resume and (out / CHECKPOINT_FILE).exists():
        saved = load_checkpoint(out / CHECKPOINT_FILE, model)
        _check_same_run(saved, header)
        start, best = int(saved["epoch"]), float(saved.get("best_f1", -1.0))
    c = options.network
    dataset = PatchDataset(c, options.data, steps=options.steps_per_epoch,
                           batch_size=options.batch_size, seed=options.seed)
    val = held_out_set(options.data, count=options.val_count, frames=c.T, size=(c.H, c.W),
                       n_channels=c.N) if options.val_count else []
    rows = []
    for epoch in range(start, options.epochs):
        t0 = time.perf_counter()
        losses = _train_epoch(model, dataset, epoch, options)
        metrics = _validate(model, val)
        row = {"epoch": epoch + 1, **{f"loss_{k}": v for k, v in losses.items()},
               **{f"val_{k}": v for k, v in metrics.items()},
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        _append_csv(out / METRICS_FILE, row)
        if val and metrics["f1"] > best:
            best = metrics["f1"]
            model.net.save_weights(out / "best.weights.h5")
        model.net.save_weights(out / "model.weights.h5")
        (out / "epochs").mkdir(exist_ok=True)
        model.net.save_weights(out / "epochs" / f"{epoch + 1:03d}.weights.h5")
        save_checkpoint(out / CHECKPOINT_FILE, model,
                        {**header, "epoch": epoch + 1, "best_f1": best, "last": row})
    return rows


def _train_epoch(model: TrainingModel, dataset: PatchDataset, epoch: int,
                 options: TrainOptions) -> dict[str, float]:
    """Run one epoch; return the mean of each loss over its batches."""
    bar = tqdm(range(options.steps_per_epoch), desc=f"epoch {epoch + 1}/{options.epochs}",
               disable=not options.progress, dynamic_ncols=True)
    sums = dict.fromkeys(LOSS_NAMES, 0.0)
    for step in bar:
        x, y = dataset.batch(epoch, step)
        model.reset_metrics()  # logs of this batch alone
        logs = model.train_on_batch(x, y, return_dict=True)
        for k in LOSS_NAMES:
            sums[k] += float(logs[k])
        bar.set_postfix({k: f"{sums[k] / (step + 1):.3g}" for k in LOSS_NAMES})
    return {k: v / max(options.steps_per_epoch, 1) for k, v in sums.items()}


def _validate(model: TrainingModel, val: list) -> dict[str, float]:
    if not val:
        return {}
    outputs = predict_samples(keras_predictor(model.net), val)
    return score_patches(val, outputs)


def _check_same_run(saved: dict[str, Any], header: dict[str, Any]) -> None:
    header = json.loads(json.dumps(header))
    for key in ("network", "steps_per_epoch", "batch_size", "seed", "data", "freeze_batchnorm"):
        if saved.get(key) != header.get(key):
            raise ValueError(f"cannot resume: '{key}' differs from the checkpoint "
                             f"({saved.get(key)!r} vs {header.get(key)!r})")


def _append_csv(path: Path, row: dict[str, float]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
