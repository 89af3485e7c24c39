"""Export a network as an installable model folder (SavedModel + card + weights + licence).

Layout written by :func:`write_model_dir` (see docs/architecture.md)::

    <out>/<name>/saved_model/        TF SavedModel, signature ``serving_default``
    <out>/<name>/model_card.json     :class:`model.registry.ModelCard`
    <out>/<name>/model.weights.h5    Keras 3 weights of the network
    <out>/<name>/LICENSE*.txt        licence of the weights, when given

The signature takes ``movie`` float32 ``(B, T, H, W, 1)`` and returns ``denoised`` and
``attention`` ``(B, T, H, W)``, ``footprints`` (opened masks) and ``raw_footprints``
``(B, N, H, W)``, and ``traces`` ``(B, N, T - 4)``.

A second signature, ``serving_compact``, returns what the engine needs when it does not write
the denoised movie: it also takes ``attention_frames`` float32 ``(B, T)`` and returns
``attention`` as each patch's maps summed over frames with those weights, ``(B, H, W)``, with
the same ``footprints``, ``raw_footprints`` and ``traces`` and no ``denoised`` (the network
stops short of the last block's synthesis). On a GPU this is a tenth of the bytes to copy back
per batch (the per-frame maps and the denoised movie are 96 % of them).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf  # noqa: TID251 (model/ may import TensorFlow)

from model.network import TRACE_OFFSET, NetworkConfig, build_network, count_parameters
from model.outputs import COMPACT_OUTPUTS, serving_outputs
from model.registry import (
    CARD_FILE,
    SAVED_MODEL_DIR,
    WEIGHTS_FILE,
    ModelCard,
    ModelCardError,
    sha256_file,
)
from model.serving import COMPACT_SIGNATURE, FRAME_WEIGHTS_NAME, INPUT_NAME, SIGNATURE

PUBLISHED_TRAINING_DATA = (
    "published DeepCaImX mini weights (Zhang & Yang): simulated two-photon movies "
    "(modified NAOMi and a SimCalc/FISSA-style generator, GCaMP6/7 kernels), "
    "500 samples x 200 epochs"
)


def export_saved_model(model: keras.Model, config: NetworkConfig, path: str | Path, *,
                       compact: bool = True) -> Path:
    """Write ``model`` as a TF SavedModel at ``path`` with the ``serving_default`` and (with
    ``compact``) ``serving_compact`` signatures (see the module docstring)."""
    path = Path(path)
    spec = tf.TensorSpec((None, config.T, config.H, config.W, 1), tf.float32, name=INPUT_NAME)
    weights_spec = tf.TensorSpec((None, config.T), tf.float32, name=FRAME_WEIGHTS_NAME)
    # the outputs the engine needs, as a model of their own: without the denoised movie the
    # graph has no last synthesis to compute
    outputs = serving_outputs(model.output, COMPACT_OUTPUTS)
    compact_model = keras.Model(model.inputs, [outputs[key] for key in COMPACT_OUTPUTS],
                                name="serving_compact")

    def serve(movie: tf.Tensor) -> dict[str, tf.Tensor]:
        return serving_outputs(model(movie, training=False))

    def serve_compact(movie: tf.Tensor, attention_frames: tf.Tensor) -> dict[str, tf.Tensor]:
        values = dict(zip(COMPACT_OUTPUTS, compact_model(movie, training=False),
                          strict=True))
        attention = values["attention"] * attention_frames[:, :, None, None]
        values["attention"] = tf.reduce_sum(attention, axis=1)
        return values

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec])
    if compact:
        archive.track(compact_model)
        archive.add_endpoint(name=COMPACT_SIGNATURE, fn=serve_compact,
                             input_signature=[spec, weights_spec])
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


def refresh_saved_model(model_dir: str | Path) -> Path:
    """Write a model folder's ``saved_model/`` again from its ``model.weights.h5`` and card.

    The card and the weights stay as they are; the SavedModel gets this version's signatures
    (a folder installed before ``serving_compact`` existed gains it). The new SavedModel is
    written beside the old one and swapped in, so a failure leaves the old one in place.

    Raises
    ------
    ModelCardError
        The weights do not match the card's ``weights_sha256``, or the card names no known
        network.
    """
    from model.keras_serving import card_network

    model_dir = Path(model_dir)
    card = ModelCard.read(model_dir / CARD_FILE)
    weights = model_dir / WEIGHTS_FILE
    if card.weights_sha256 and sha256_file(weights) != card.weights_sha256:
        raise ModelCardError(f"{weights} does not match the card's weights_sha256")
    config = card_network(card)
    model = build_network(config)
    model.load_weights(weights)
    target = model_dir / SAVED_MODEL_DIR
    fresh, old = target.with_name(f"{target.name}.new"), target.with_name(f"{target.name}.old")
    for leftover in (fresh, old):
        shutil.rmtree(leftover, ignore_errors=True)
    export_saved_model(model, config, fresh)
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    shutil.rmtree(old, ignore_errors=True)
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
