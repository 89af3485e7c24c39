"""Run an installed model from its Keras weights on whichever Keras backend is active.

The TensorFlow SavedModel (:mod:`model.serving`) is what workers run by default. This runner
builds the network from the model card and loads ``model.weights.h5`` instead, so the same model
runs on a GPU under JAX (``KERAS_BACKEND=jax``) without a GPU build of TensorFlow. Both return
the same :class:`~model.outputs.PatchOutputs`.

>>> predictor = KerasPredictor.load("model/zoo/caimx-mini")
>>> out = predictor.predict(patches)        # patches: float32 (B, T, H, W)

On JAX the network call is dispatched asynchronously: :meth:`KerasPredictor.start` returns at
once and the device computes while the caller prepares the next batch or handles the previous
one's outputs; the engine keeps one batch in flight this way, so a GPU does not idle while the
host copies inputs and outputs or cuts the next batch.

``start(..., attention_frames=weights)`` sums the attention map over each patch's frames on the
device (``weights`` float32 ``(B, T)``, 1 at the frames to add): the engine needs only the sum
over the frames a window owns, and the per-frame maps are the largest output (105 MB per batch
of 256 mini patches) to copy back to the host. :meth:`KerasPredictor.stage` pads a batch and
copies it to the device ahead of its ``start``, so that the copy can happen on another thread
than the one that keeps the device fed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from model.network import PRESETS, NetworkConfig, build_network
from model.outputs import (
    COMPACT_OUTPUTS,
    SERVING_OUTPUTS,
    PatchOutputs,
    PatchPredictor,
    as_patch_batch,
    checked_frame_weights,
    serving_outputs,
    summed_attention,
)
from model.registry import WEIGHTS_FILE, ModelCard, ModelCardError, sha256_file
from model.runtimes import framework_device

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


def preferred_convs() -> dict[str, str]:
    """How the ISTA's and the segmentation head's convolutions run best here, as measured.

    TensorFlow on a CPU: both as Conv3D. JAX: the ISTA per frame (``frame2d``; +11 % patches/s
    for the mini network on an H100, 2x on a CPU); the head per frame on a CPU (3.4x for the
    whole mini network, XLA's CPU Conv3D being slow) but as Conv3D on a GPU, where the per-frame
    form is not measured yet. Keys: ``ista``, ``head``.
    """
    if keras.backend.backend() != "jax":
        return {"ista": "conv3d", "head": "conv3d"}
    on_gpu = framework_device("jax") == "GPU"
    return {"ista": "frame2d", "head": "conv3d" if on_gpu else "frame2d"}


Fetch = Callable[[], list[np.ndarray]]
"""Waits for one network call and returns its outputs as numpy arrays."""

Dispatch = Callable[[Any, Any], Fetch]
"""Starts the network on one padded input batch ``(B, T, H, W, 1)`` (numpy, or already on the
device); the second argument, frame weights ``(B, T)`` or None, asks for the attention output
summed over frames with those weights."""


def _dispatcher(model: keras.Model, attention_at: int | None) -> Dispatch:
    """A function that starts ``model`` on one input batch and returns its :data:`Fetch`.

    ``attention_at``: the position of the attention map among the model's outputs (None: not
    among them), which frame weights replace by its weighted sum over frames.

    Under JAX the call is one jitted, stateless function (``Model.stateless_call``): it returns
    device arrays before they are computed, with their copy to the host requested behind the
    computation, and the fetch blocks; the weighted sum is computed there too (a product and a
    reduction that XLA fuses, in float32: no TF32 matrix product), so only ``(B, H, W)`` of the
    attention comes back. Other backends compute in ``predict_on_batch`` and the fetch hands
    the result over (the sum made on the host).
    """
    if keras.backend.backend() != "jax":
        def start_eagerly(x: Any, weights: Any) -> Fetch:
            values = list(model.predict_on_batch(x))
            if weights is not None and attention_at is not None:
                values[attention_at] = summed_attention(values[attention_at], weights)
            return lambda: values

        return start_eagerly

    import jax

    def call(trainable: list[Any], non_trainable: list[Any], x: Any,
             weights: Any) -> list[Any]:
        values, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        values = list(values)
        if weights is not None and attention_at is not None:
            values[attention_at] = (values[attention_at] * weights[:, :, None, None]).sum(axis=1)
        return values

    compiled = jax.jit(call)  # traced once with weights and once without, as asked
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def start_async(x: Any, weights: Any) -> Fetch:
        # queued on the device; returns at once
        values = compiled(trainable, non_trainable, x, weights)
        # the copy back is queued behind the computation, not left until the fetch asks
        jax.copy_to_host_async(values)
        return lambda: [np.asarray(v) for v in values]

    return start_async


@dataclasses.dataclass(frozen=True)
class StagedPatches:
    """Patches made ready for :meth:`KerasPredictor.start` by :meth:`KerasPredictor.stage`:
    per batch, ``(patches in it, padded input, padded frame weights or None)``, the arrays on
    the device under JAX."""

    parts: tuple[tuple[int, Any, Any], ...]
    summed_attention: bool


def _backend_and_device() -> str:
    """The active Keras backend, its version and where it computes, e.g. ``JAX 0.10.2, GPU``."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return f"JAX {jax.__version__}, {framework_device(backend)}"
    if backend == "tensorflow":
        import tensorflow as tf  # noqa: TID251 (model/ may import TensorFlow)

        return f"TensorFlow {tf.__version__}, {framework_device(backend)}"
    return backend


def _device_put() -> Callable[[np.ndarray], Any]:
    """Copies an array to the default device under JAX (it stays as it is elsewhere)."""
    if keras.backend.backend() != "jax":
        return lambda a: a
    import jax

    return jax.device_put


class KerasPredictor(PatchPredictor):
    """A network built from a model card, with the folder's Keras weights loaded.

    ``batch_size`` patches go to the backend at once; a smaller batch is padded to that size, so
    a compiling backend (JAX, XLA) compiles one shape, once (tens of seconds on a GPU), rather
    than one per batch size. Each output set (with or without ``denoised``) is its own model,
    built and compiled when first asked for.
    """

    def __init__(self, path: Path, card: ModelCard, network: keras.Model,
                 batch_size: int = DEFAULT_BATCH, convs: str = "") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.path = path
        self.card = card
        self.batch_size = batch_size
        self._network = network
        self._runners: dict[tuple[str, ...], Dispatch] = {}
        self.runtime = f"Keras {keras.__version__} on {_backend_and_device()}" + (
            f" ({convs})" if convs else "")

    @classmethod
    def load(cls, path: str | Path, *, batch_size: int = DEFAULT_BATCH,
             verify: bool = True, ista_convs: str = "auto",
             head_convs: str = "auto") -> KerasPredictor:
        """Load from a model folder holding ``model_card.json`` and ``model.weights.h5``.

        With ``verify``, the weights' SHA-256 must match the card's ``weights_sha256``.
        ``ista_convs``, ``head_convs``: how the ISTA's and the segmentation head's convolutions
        are computed: ``conv3d``, ``frame2d`` (:class:`~model.layers.FrameConv3D`: the same
        outputs to float32 round-off) or ``auto`` (:func:`preferred_convs`).
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
        preferred = preferred_convs()
        ista_convs = preferred["ista"] if ista_convs == "auto" else ista_convs
        head_convs = preferred["head"] if head_convs == "auto" else head_convs
        if (ista_convs, head_convs) != ("conv3d", "conv3d"):
            # same weights, by position (the file names Conv3D layers)
            variant = build_network(card_network(card), ista_convs=ista_convs,
                                    head_convs=head_convs)
            variant.set_weights(network.get_weights())
            network = variant
        return cls(path, card, network, batch_size,
                   convs=f"ISTA convolutions {ista_convs}, head {head_convs}")

    def stage(self, patches: np.ndarray, batch_size: int | None = None, *,
              attention_frames: np.ndarray | None = None) -> StagedPatches:
        """``patches`` (and their frame weights) checked, padded to whole batches and, under
        JAX, copied to the device, for :meth:`start`: a caller that prepares batches on one
        thread and starts them on another moves the copy off the starting thread (the engine
        stages in the thread that cuts the batches, so the thread that feeds the device only
        queues calls). Options as :meth:`predict`."""
        patches = as_patch_batch(patches, self.card.patch_shape)
        weights = checked_frame_weights(attention_frames, patches.shape[:2])
        step = batch_size or self.batch_size
        put = _device_put()
        parts = tuple((min(step, len(patches) - s),
                       put(self._padded(patches[s:s + step])[..., None]),
                       None if weights is None else put(self._padded(weights[s:s + step])))
                      for s in range(0, len(patches), step))
        return StagedPatches(parts, summed_attention=weights is not None)

    def start(self, patches: np.ndarray | StagedPatches, batch_size: int | None = None, *,
              denoised: bool = True,
              attention_frames: np.ndarray | None = None) -> Callable[[], PatchOutputs]:
        """Start the network on ``patches`` and return a function that waits for the outputs.

        On JAX the call returns before the device has finished (see the module docstring);
        elsewhere the work is done by the time it returns. ``patches`` may be
        :meth:`stage`'s result (then ``batch_size`` and ``attention_frames`` were given
        there). Options as :meth:`predict`.
        """
        staged = (patches if isinstance(patches, StagedPatches)
                  else self.stage(patches, batch_size, attention_frames=attention_frames))
        keys = SERVING_OUTPUTS if denoised else COMPACT_OUTPUTS
        run = self._runner(keys)
        pending = [(n, run(x, weights)) for n, x, weights in staged.parts]

        def result() -> PatchOutputs:
            parts = [self._named(keys, fetch(), n) for n, fetch in pending]
            if parts:
                return PatchOutputs.concat(parts)
            return PatchOutputs.empty(self.card, denoised=denoised,
                                      summed_attention=staged.summed_attention)

        return result

    def _runner(self, keys: tuple[str, ...]) -> Dispatch:
        if keys not in self._runners:
            outputs = serving_outputs(self._network.output, keys)
            model = keras.Model(self._network.inputs, [outputs[k] for k in keys],
                                name="serving")
            self._runners[keys] = _dispatcher(
                model, keys.index("attention") if "attention" in keys else None)
        return self._runners[keys]

    def _padded(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` (patches or their frame weights) as float32, padded with zeros to
        ``batch_size`` along its first axis."""
        if len(batch) >= self.batch_size:  # a full batch goes as it is (a view: no 100 MB copy)
            return np.ascontiguousarray(batch, np.float32)
        x = np.zeros((self.batch_size, *batch.shape[1:]), np.float32)
        x[:len(batch)] = batch
        return x

    @staticmethod
    def _named(keys: tuple[str, ...], values: list[np.ndarray], n: int) -> PatchOutputs:
        got = dict(zip(keys, values, strict=True))
        return PatchOutputs(**{key: np.asarray(got[key][:n], dtype=np.float32)
                               if key in got else None for key in SERVING_OUTPUTS})
