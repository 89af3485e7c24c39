"""Export a network as an installable model folder (SavedModel + card + weights + licence).

Layout written by :func:`write_model_dir` (see docs/architecture.md)::

    <out>/<name>/saved_model/        TF SavedModel, signature ``serving_default``
    <out>/<name>/model_card.json     :class:`model.registry.ModelCard`
    <out>/<name>/model.weights.h5    Keras 3 weights of the network
    <out>/<name>/LICENSE*.txt        licence of the weights, when given

The signature takes ``movie`` float32 ``(B, T, H, W, 1)`` and returns ``denoised`` and
``attention`` ``(B, T, H, W)``, ``footprints`` (opened masks) and ``raw_footprints``
``(B, N, H, W)``, and ``traces`` ``(B, N, T - 4)``.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf  # noqa: TID251 (model/ may import TensorFlow)

from model.network import TRACE_OFFSET, NetworkConfig, build_network, count_parameters
from model.outputs import serving_outputs
from model.registry import (
    CARD_FILE,
    SAVED_MODEL_DIR,
    WEIGHTS_FILE,
    ModelCard,
    sha256_file,
)

SIGNATURE = "serving_default"
INPUT_NAME = "movie"
PUBLISHED_TRAINING_DATA = (
    "published DeepCaImX mini weights (Zhang & Yang): simulated two-photon movies "
    "(modified NAOMi and a SimCalc/FISSA-style generator, GCaMP6/7 kernels), "
    "500 samples x 200 epochs"
)


def export_saved_model(model: keras.Model, config: NetworkConfig, path: str | Path) -> Path:
    """Write ``model`` as a TF SavedModel at ``path`` with the ``serving_default`` signature."""
    path = Path(path)
    spec = tf.TensorSpec((None, config.T, config.H, config.W, 1), tf.float32, name=INPUT_NAME)

    def serve(movie: tf.Tensor) -> dict[str, tf.Tensor]:
        return serving_outputs(model(movie, training=False))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec])
    archive.write_out(str(path), verbose=False)
    return path


def write_model_dir(
    model: keras.Model,
    config: NetworkConfig,
    out_dir: str | Path,
    *,
    name: str,
    preset: str,
    version: str,
    training_data: str,
    license: str,
    license_file: str | Path | None = None,
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
    input_scaling: str = "minmax-per-patch",
) -> Path:
    """Write the installable folder ``out_dir/name`` and return its path.

    ``input_scaling`` goes into the card: what the weights were trained on (see
    ``model.inference.scaling.INPUT_SCALINGS``).
    """
    target = Path(out_dir) / name
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} exists (use overwrite to replace it)")
        shutil.rmtree(target)
    target.mkdir(parents=True)
    weights = target / WEIGHTS_FILE
    model.save_weights(weights)
    export_saved_model(model, config, target / SAVED_MODEL_DIR)
    if license_file is not None:
        shutil.copyfile(license_file, target / Path(license_file).name)
    card = ModelCard(
        name=name,
        version=version,
        preset=preset,
        T=config.T,
        H=config.H,
        W=config.W,
        N=config.N,
        trace_offset=TRACE_OFFSET,
        input_scaling=input_scaling,
        training_data=training_data,
        weights_sha256=sha256_file(weights),
        parameters=count_parameters(model),
        license=license,
        created=datetime.now(UTC).replace(microsecond=0).isoformat(),
        metrics=dict(metrics or {}),
    )
    card.write(target / CARD_FILE)
    return target


def load_weights(model: keras.Model, config: NetworkConfig, weights: str | Path) -> None:
    """Load a Keras 3 ``.weights.h5`` or the authors' Keras-2 full-model ``.h5`` into ``model``."""
    weights = Path(weights)
    if weights.name.endswith(".weights.h5"):
        model.load_weights(weights)
        return
    from model.weights_import import load_published_weights

    load_published_weights(model, weights, config)


def export_from_weights(
    config: NetworkConfig,
    weights: str | Path,
    out_dir: str | Path,
    **card_fields: Any,
) -> Path:
    """Build the network, load ``weights`` and write the installable folder."""
    model = build_network(config)
    load_weights(model, config, weights)
    return write_model_dir(model, config, out_dir, **card_fields)
