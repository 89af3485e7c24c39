"""What every predictor returns for a batch of patches (the serving contract), backend-free.

The TensorFlow SavedModel runner (:mod:`model.serving`) and the Keras runner
(:mod:`model.keras_serving`) both return :class:`PatchOutputs`, so the engine never knows which
one ran the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

SERVING_OUTPUTS = ("denoised", "attention", "footprints", "raw_footprints", "traces")
"""Output names of the serving signature, in the order of :class:`PatchOutputs`' fields."""

OPTIONAL_OUTPUTS = ("denoised",)
"""Outputs a runner may skip when the caller does not want them (the engine needs the denoised
movie only when it writes it): less work on the device and less to copy back to the host."""

COMPACT_OUTPUTS = tuple(key for key in SERVING_OUTPUTS if key not in OPTIONAL_OUTPUTS)
"""Outputs of a call without the optional ones (the SavedModel's ``serving_compact``)."""

NETWORK_OUTPUT_OF = {"denoised": "denoised", "attention": "attention",
                     "footprints": "opened_masks", "raw_footprints": "raw_masks",
                     "traces": "traces"}
"""Which network output (:func:`model.network.build_network`) each serving output is."""


@dataclass(frozen=True)
class PatchOutputs:
    """Network outputs for a batch of patches (numpy float32).

    ``denoised``, ``attention``: ``(B, T, H, W)``; ``footprints`` (opened masks, all-zero for
    an empty channel) and ``raw_footprints``: ``(B, N, H, W)``; ``traces``: ``(B, N, T - 4)``,
    trace frame ``i`` being input frame ``i + card.trace_offset``. ``denoised`` is None when
    the caller did not ask for it (:data:`OPTIONAL_OUTPUTS`); ``attention`` is ``(B, H, W)``,
    each patch's maps summed over frames, when the caller gave frame weights for that sum and
    the runner computes it (``start(..., attention_frames=)``).
    """

    denoised: np.ndarray | None
    attention: np.ndarray
    footprints: np.ndarray
    raw_footprints: np.ndarray
    traces: np.ndarray

    @classmethod
    def concat(cls, parts: list[PatchOutputs]) -> PatchOutputs:
        """One batch from consecutive batches."""
        if len(parts) == 1:
            return parts[0]
        return cls(**{key: None if getattr(parts[0], key) is None
                      else np.concatenate([getattr(p, key) for p in parts])
                      for key in SERVING_OUTPUTS})

    def take(self, start: int, stop: int) -> PatchOutputs:
        """Outputs of patches ``start .. stop`` of this batch (views, no copy)."""
        return type(self)(**{key: None if getattr(self, key) is None
                             else getattr(self, key)[start:stop] for key in SERVING_OUTPUTS})

    @classmethod
    def empty(cls, card: Any, *, denoised: bool = True,
              summed_attention: bool = False) -> PatchOutputs:
        """Outputs for zero patches of a model with this card (without ``denoised`` and with
        the attention as sums over frames, ``(0, H, W)``, as asked)."""
        t, hw = (0, card.T, card.H, card.W), (0, card.N, card.H, card.W)
        z = np.zeros
        return cls(z(t, np.float32) if denoised else None,
                   z((0, card.H, card.W) if summed_attention else t, np.float32),
                   z(hw, np.float32), z(hw, np.float32),
                   z((0, card.N, card.T - 2 * card.trace_offset), np.float32))


class PatchPredictor:
    """What the runners share: ``patch_shape`` from their ``card``, and ``predict`` as
    ``start`` followed by waiting for its outputs. A runner implements ``start`` and sets
    ``runtime``, one line on what computes the network (framework, version, device), which the
    engine records with each chunk and in the result (two runtimes agree only to round-off)."""

    card: Any
    runtime: str = ""

    @property
    def patch_shape(self) -> tuple[int, int, int]:
        return self.card.patch_shape

    def predict(self, patches: np.ndarray, batch_size: int | None = None, *,
                denoised: bool = True,
                attention_frames: np.ndarray | None = None) -> PatchOutputs:
        """Run ``patches`` float32 ``(B, T, H, W)`` (scaled as the card's ``input_scaling``).

        ``batch_size``: patches per network call (each runner has its default).
        ``denoised=False``: the denoised movie is not wanted (its field is None); the runners
        then stop the network short of the last ISTA block's synthesis and copy nothing of
        that size back. ``attention_frames``: frame weights ``(B, T)``; the attention output
        is then each patch's maps summed over frames with them, ``(B, H, W)``.
        """
        return self.start(patches, batch_size, denoised=denoised,
                          attention_frames=attention_frames)()

    def start(self, patches: Any, batch_size: int | None = None, *, denoised: bool = True,
              attention_frames: np.ndarray | None = None) -> Callable[[], PatchOutputs]:
        """Start the network on ``patches``; the returned function waits for the outputs."""
        raise NotImplementedError


def as_patch_batch(patches: Any, patch_shape: tuple[int, int, int]) -> np.ndarray:
    """``patches`` as float32 ``(B, T, H, W)`` (a trailing channel axis of 1 is dropped);
    ``ValueError`` when they are not patches of ``patch_shape``."""
    patches = np.asarray(patches, dtype=np.float32)
    if patches.ndim == 5 and patches.shape[-1] == 1:
        patches = patches[..., 0]
    if patches.ndim != 4 or patches.shape[1:] != tuple(patch_shape):
        raise ValueError(f"patches must have shape (batch, {', '.join(map(str, patch_shape))}),"
                         f" got {patches.shape}")
    return patches


def checked_frame_weights(weights: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """Frame weights for summing the attention maps, as float32 ``(B, T)`` (None stays None);
    ``ValueError`` for any other shape."""
    if weights is None:
        return None
    weights = np.asarray(weights, np.float32)
    if weights.shape != shape:
        raise ValueError(f"attention_frames must have shape {shape} (patches, frames), "
                         f"got {weights.shape}")
    return weights


def summed_attention(attention: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per patch, the attention maps ``(B, T, H, W)`` summed over frames with ``weights``
    ``(B, T)``: ``(B, H, W)`` float32. With weights of 0 and 1 these are the same numbers as
    the sums over the frames weighted 1 (adding a zero changes no float)."""
    return (np.asarray(attention) * np.asarray(weights)[:, :, None, None]).sum(axis=1)


def serving_outputs(outputs: dict[str, Any],
                    keys: tuple[str, ...] = SERVING_OUTPUTS) -> dict[str, Any]:
    """Network outputs renamed and laid out as the serving contract says (``keras.ops``);
    ``keys``: these serving outputs only."""
    from keras import ops

    named = {key: outputs[NETWORK_OUTPUT_OF[key]] for key in keys}
    if "traces" in named:
        named["traces"] = ops.transpose(named["traces"], (0, 2, 1))
    return named
