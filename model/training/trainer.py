"""The network wrapped for training (published losses), and exact checkpoints.

:class:`TrainingModel` only adds the loss: it works with ``train_on_batch`` and ``fit`` on every
Keras backend (TensorFlow, JAX), since it uses ``keras.ops`` alone. A checkpoint holds every
network weight (BatchNormalization statistics included), every optimizer variable (step count,
Adam moments) and a JSON header (epoch, seed, settings, history); the training data are a pure
function of ``(seed, sample index)``, so that is the whole random state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from model.losses import published_losses

LOSS_NAMES = ("total", "denoise", "segmentation", "trace")
CHECKPOINT_FILE = "checkpoint.npz"


class TrainingModel(keras.Model):
    """``net`` plus the published losses; logs ``total``, ``denoise``, ``segmentation``, ``trace``.

    Parameters
    ----------
    net : keras.Model
        From :func:`model.network.build_network` (dict outputs).
    """

    def __init__(self, net: keras.Model, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net = net
        self.total_tracker = keras.metrics.Mean(name="total")
        self.denoise_tracker = keras.metrics.Mean(name="denoise")
        self.segmentation_tracker = keras.metrics.Mean(name="segmentation")
        self.trace_tracker = keras.metrics.Mean(name="trace")

    def call(self, x: Any, training: bool = False) -> dict[str, Any]:
        return self.net(x, training=training)

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None,
                     sample_weight: Any = None, training: bool = True) -> Any:
        parts = published_losses(y, y_pred)
        for name in LOSS_NAMES:
            getattr(self, f"{name}_tracker").update_state(parts[name])
        return parts["total"]

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [getattr(self, f"{name}_tracker") for name in LOSS_NAMES]

    def batch_losses(self, x: np.ndarray, y: dict[str, np.ndarray]) -> dict[str, float]:
        """Losses of one batch in inference mode, without updating anything."""
        out = self.net(x, training=False)
        return {k: float(ops.convert_to_numpy(v)) for k, v in published_losses(y, out).items()}


def build_optimizer(model: TrainingModel) -> None:
    """Create the optimizer's variables now (needed before restoring them)."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def save_checkpoint(path: str | Path, model: TrainingModel, header: dict[str, Any]) -> Path:
    """Write weights, optimizer state and ``header`` atomically to ``path`` (``.npz``)."""
    path = Path(path)
    build_optimizer(model)
    arrays = {f"w{i:04d}": ops.convert_to_numpy(v) for i, v in enumerate(model.net.weights)}
    arrays.update({f"o{i:04d}": ops.convert_to_numpy(v)
                   for i, v in enumerate(model.optimizer.variables)})
    arrays["header"] = np.array(json.dumps(header))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, model: TrainingModel) -> dict[str, Any]:
    """Restore weights and optimizer state saved by :func:`save_checkpoint`; return the header.

    Raises
    ------
    ValueError
        If the checkpoint does not fit the model (different network or optimizer).
    """
    build_optimizer(model)
    with np.load(path, allow_pickle=False) as data:
        _assign(model.net.weights, data, "w", path)
        _assign(model.optimizer.variables, data, "o", path)
        return json.loads(str(data["header"]))


def _assign(variables: list, data: Any, prefix: str, path: str | Path) -> None:
    keys = sorted(k for k in data.files if k.startswith(prefix))
    if len(keys) != len(variables):
        raise ValueError(f"{path}: {len(keys)} saved '{prefix}' arrays, model has "
                         f"{len(variables)}; was it written for another network?")
    for key, var in zip(keys, variables, strict=True):
        value = data[key]
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"{path}: {key} has shape {value.shape}, {var.path} needs {var.shape}")
        var.assign(value)
