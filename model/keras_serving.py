"""Run an installed model from its Keras weights on whichever Keras backend is active.

The TensorFlow SavedModel (:mod:`model.serving`) is what workers run by default. This runner
builds the network from the model card and loads ``model.weights.h5`` instead, so the same model
runs on a GPU under JAX (``KERAS_BACKEND=jax``) without a GPU build of TensorFlow. Both return
the same :class:`~model.outputs.PatchOutputs`.

>>> predictor = KerasPredictor.load("model/zoo/caimx-mini")
>>> out = predictor.predict(patches)        # patches: float32 (B, T, H, W)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np

from model.network import PRESETS, NetworkConfig, build_network
from model.outputs import SERVING_OUTPUTS, PatchOutputs, as_patch_batch, serving_outputs
from model.registry import WEIGHTS_FILE, ModelCard, ModelCardError, sha256_file

DEFAULT_BATCH = 64


def card_network(card: ModelCard) -> NetworkConfig:
    """The network a card describes: its preset with the card's patch size and channel count.

    Raises
    ------
    ModelCardError
        The card names no known preset, or sizes the preset cannot take.
    """
    if card.preset not in PRESETS:
        raise ModelCardError(f"model {card.name!r} has preset {card.preset!r}; known: "
                             f"{', '.join(PRESETS)}")
    config = PRESETS[card.preset]
    if (config.T, config.H, config.W, config.N) != (card.T, card.H, card.W, card.N):
        if config.dense_widths[-1] != card.N:
            raise ModelCardError(f"model {card.name!r}: {card.N} neurons per patch, but preset "
                                 f"{card.preset!r} has {config.dense_widths[-1]}")
        config = dataclasses.replace(config, T=card.T, H=card.H, W=card.W)
    return config


def preferred_ista_convs() -> str:
    """``frame2d`` where it was measured faster (JAX on a GPU: +11 % patches/s for the mini
    network on an H100), else ``conv3d`` (TensorFlow on a CPU runs the Conv3D faster)."""
    if keras.backend.backend() != "jax":
        return "conv3d"
    import jax

    return "frame2d" if jax.default_backend() == "gpu" else "conv3d"


class KerasPredictor:
    """A network built from a model card, with the folder's Keras weights loaded.

    ``batch_size`` patches go to the backend at once; a smaller batch is padded to that size, so
    a compiling backend (JAX, XLA) compiles one shape, once (tens of seconds on a GPU), rather
    than one per batch size.
    """

    def __init__(self, path: Path, card: ModelCard, network: keras.Model,
                 batch_size: int = DEFAULT_BATCH) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.path = path
        self.card = card
        self.batch_size = batch_size
        outputs = serving_outputs(network.output)
        self._serving = keras.Model(network.inputs, [outputs[k] for k in SERVING_OUTPUTS],
                                    name="serving")

    @classmethod
    def load(cls, path: str | Path, *, batch_size: int = DEFAULT_BATCH,
             verify: bool = True, ista_convs: str = "auto") -> KerasPredictor:
        """Load from a model folder holding ``model_card.json`` and ``model.weights.h5``.

        With ``verify``, the weights' SHA-256 must match the card's ``weights_sha256``.
        ``ista_convs``: ``conv3d``, ``frame2d`` (:class:`~model.layers.FrameConv3D`: the same
        outputs, faster on a GPU) or ``auto`` (:func:`preferred_ista_convs`).
        """
        path = Path(path)
        card = ModelCard.read(path)
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"no Keras weights ({WEIGHTS_FILE}) in {path}")
        if verify and card.weights_sha256 and sha256_file(weights) != card.weights_sha256:
            raise ModelCardError(f"{weights} does not match the card's weights_sha256 "
                                 "(a damaged or replaced file)")
        network = build_network(card_network(card))
        network.load_weights(weights)
        if ista_convs == "auto":
            ista_convs = preferred_ista_convs()
        if ista_convs != "conv3d":  # same weights, by position (the file names Conv3D layers)
            variant = build_network(card_network(card), ista_convs=ista_convs)
            variant.set_weights(network.get_weights())
            network = variant
        return cls(path, card, network, batch_size)

    @property
    def patch_shape(self) -> tuple[int, int, int]:
        return self.card.patch_shape

    def predict(self, patches: np.ndarray, batch_size: int | None = None) -> PatchOutputs:
        """Run ``patches`` float32 ``(B, T, H, W)`` (scaled as the card's ``input_scaling``)."""
        patches = as_patch_batch(patches, self.card.patch_shape)
        step = batch_size or self.batch_size
        parts = [self._run(patches[start:start + step])
                 for start in range(0, len(patches), step)]
        return PatchOutputs.concat(parts) if parts else PatchOutputs.empty(self.card)

    def _run(self, batch: np.ndarray) -> PatchOutputs:
        n = len(batch)
        if n >= self.batch_size:  # a full batch goes as it is (a view: no 100 MB copy)
            x = np.ascontiguousarray(batch, np.float32)[..., None]
        else:
            x = np.zeros((self.batch_size, *batch.shape[1:], 1), np.float32)
            x[:n, ..., 0] = batch
        values = self._serving.predict_on_batch(x)
        return PatchOutputs(**{key: np.asarray(v[:n], dtype=np.float32)
                               for key, v in zip(SERVING_OUTPUTS, values, strict=True)})
