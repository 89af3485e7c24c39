"""Load the authors' Keras-2 HDF5 weights (``DeepCaImX_model_mini.h5``) into the new network.

Keras 3 cannot deserialize that file (its graph has Python ``Lambda`` layers), so it is read
with h5py: the ``model_config`` attribute gives each layer's class, and within a class the
numeric name suffix (``conv3d``, ``conv3d_1``, ...) gives the authors' creation order, which
:func:`model.network.weighted_layer_names` reproduces. Every array is checked for shape.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras
import numpy as np

from model.network import NetworkConfig, weighted_layer_names

# Keras-2 weight-name suffixes per class, in the order Keras 3 stores the variables.
_WEIGHT_ORDER: dict[str, tuple[str, ...]] = {
    "Conv3D": ("kernel", "bias"),
    "Conv1D": ("kernel", "bias"),
    "Dense": ("kernel", "bias"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "ConvLSTM2D": ("kernel", "recurrent_kernel", "bias"),
}


class WeightImportError(ValueError):
    """The HDF5 file does not fit the network (missing layer, extra layer, wrong shape)."""


@dataclass(frozen=True)
class PublishedLayer:
    """One layer of the published file: its name, Keras class and arrays by short name."""

    name: str
    class_name: str
    arrays: dict[str, np.ndarray]


def _suffix(name: str) -> int:
    match = re.search(r"_(\d+)$", name)
    return int(match.group(1)) if match else 0


def read_published(path: str | Path) -> list[PublishedLayer]:
    """All layers with weights in a Keras-2 HDF5 model file, in file-config order."""
    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs or "model_weights" not in f:
            raise WeightImportError(f"{path}: not a Keras-2 full-model HDF5 file")
        config = json.loads(f.attrs["model_config"])
        group = f["model_weights"]
        found = []
        for layer in config["config"]["layers"]:
            name = layer["name"]
            if name not in group:
                continue
            arrays = {}
            for raw in group[name].attrs.get("weight_names", []):
                weight_name = raw.decode() if isinstance(raw, bytes) else str(raw)
                short = weight_name.rsplit("/", 1)[-1].split(":")[0]
                arrays[short] = np.asarray(group[name][weight_name], dtype=np.float32)
            if arrays:
                found.append(PublishedLayer(name, layer["class_name"], arrays))
    return found


def published_name_map(published: list[PublishedLayer], config: NetworkConfig) -> dict[str, str]:
    """Map each published layer name to the new network's layer name (by class and order)."""
    by_class: dict[str, list[str]] = defaultdict(list)
    for layer in published:
        by_class[layer.class_name].append(layer.name)
    expected = weighted_layer_names(config)
    unknown = set(by_class) - set(expected)
    if unknown:
        raise WeightImportError(f"published file has weighted layers of unknown classes {unknown}")
    mapping = {}
    for class_name, new_names in expected.items():
        old_names = sorted(by_class.get(class_name, []), key=_suffix)
        if len(old_names) != len(new_names):
            raise WeightImportError(
                f"{class_name}: the file has {len(old_names)} layers, the network "
                f"{len(new_names)} (wrong preset?)"
            )
        mapping.update(zip(old_names, new_names, strict=True))
    return mapping


def load_published_weights(model: keras.Model, path: str | Path, config: NetworkConfig) -> int:
    """Assign the arrays of the published HDF5 ``path`` to ``model``; return the count set.

    Raises :class:`WeightImportError` on any missing layer, missing array or shape mismatch,
    before anything is assigned.
    """
    published = read_published(path)
    mapping = published_name_map(published, config)
    plan: list[tuple[keras.Variable, np.ndarray]] = []
    for layer in published:
        target = model.get_layer(mapping[layer.name])
        order = _WEIGHT_ORDER[layer.class_name]
        names = [short for short in order if short in layer.arrays]
        if set(names) != set(layer.arrays):
            raise WeightImportError(f"{layer.name}: unexpected arrays {sorted(layer.arrays)}")
        variables = target.weights
        if len(variables) != len(names):
            raise WeightImportError(
                f"{layer.name} -> {target.name}: file has {names}, layer has "
                f"{[v.path for v in variables]}"
            )
        for short, variable in zip(names, variables, strict=True):
            array = layer.arrays[short]
            if tuple(variable.shape) != array.shape:
                raise WeightImportError(
                    f"{layer.name}/{short} -> {variable.path}: shape {array.shape} in the file, "
                    f"{tuple(variable.shape)} in the network"
                )
            if not variable.path.endswith(short):
                raise WeightImportError(f"{layer.name}/{short} would land in {variable.path}")
            plan.append((variable, array))
    assigned = {id(v) for v, _ in plan}
    missing = [v.path for v in model.weights if id(v) not in assigned]
    if missing:
        raise WeightImportError(f"no published array for {missing}")
    for variable, array in plan:
        variable.assign(array)
    return sum(int(array.size) for _, array in plan)
