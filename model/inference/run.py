"""Batch patches through a predictor (a loaded SavedModel, or anything with the same members)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from model.inference.scaling import check_input_scaling
from model.outputs import OPTIONAL_OUTPUTS, SERVING_OUTPUTS, PatchOutputs


class Predictor(Protocol):
    """What the engine needs from a model: its card and ``predict``.

    ``predict(patches)`` takes float32 ``(B, T, H, W)`` in [0, 1] (scaled as the card's
    ``input_scaling`` says) and returns an
    object with numpy fields ``denoised`` and ``attention`` ``(B, T, H, W)``, ``footprints`` (opened
    masks) and ``raw_footprints`` ``(B, N, H, W)``, and ``traces`` ``(B, N, T - 4)``.

    A predictor may also have ``start(patches, *, denoised, attention_frames)``, returning a
    function that waits for those outputs (see :func:`start_predict`).
    """

    card: Any

    def predict(self, patches: np.ndarray) -> Any: ...


def start_predict(predictor: Predictor, patches: np.ndarray, *, denoised: bool = True,
                  attention_frames: np.ndarray | None = None) -> Callable[[], Any]:
    """Start the network on one batch; the returned function waits for its outputs.

    A predictor with ``start`` (the Keras runner, asynchronous under JAX) may still be computing
    when this returns, so the caller can prepare the next batch meanwhile; any other predictor
    runs ``predict`` now. ``denoised=False``: the caller does not need the denoised movie.
    ``attention_frames`` (float32 ``(B, T)``): the caller needs each patch's attention maps
    only summed over frames with these weights, which a predictor with ``start`` may return
    instead of the maps (``(B, H, W)``; the Keras runner sums on the device). Callers take
    either (:func:`attention_sums`).
    """
    start = getattr(predictor, "start", None)
    if start is not None:
        return start(patches, denoised=denoised, attention_frames=attention_frames)
    outputs = predictor.predict(patches)
    return lambda: outputs


def runtime_of(predictor: Predictor) -> str:
    """The predictor's ``runtime`` (framework, version, device; ``""`` when it does not say)."""
    return str(getattr(predictor, "runtime", "") or "")


def attention_sums(attention: np.ndarray, frames: slice) -> np.ndarray:
    """Per patch, the attention maps summed over ``frames``: ``(B, H, W)``. ``attention`` is
    either the maps ``(B, T, H, W)`` or already those sums (a predictor given the frame
    weights, :func:`start_predict`)."""
    attention = np.asarray(attention)
    return attention if attention.ndim == 3 else attention[:, frames].sum(axis=1)


def frame_weights(n_frames: int, frames: slice, n_patches: int) -> np.ndarray:
    """Weights ``(n_patches, n_frames)`` float32 that pick ``frames`` of every patch."""
    weights = np.zeros((n_patches, n_frames), np.float32)
    weights[:, frames] = 1
    return weights


def card_geometry(card: Any) -> tuple[tuple[int, int, int], int, int]:
    """``((T, H, W), N, trace_offset)`` from a model card (attributes or mapping)."""
    get = card.get if isinstance(card, dict) else lambda k, d=None: getattr(card, k, d)
    patch = (int(get("T")), int(get("H")), int(get("W")))
    return patch, int(get("N")), int(get("trace_offset", 2))


def card_input_scaling(card: Any) -> str:
    """The card's ``input_scaling`` (missing: ``"minmax-per-patch"``); unknown modes raise
    ``ValueError``."""
    get = card.get if isinstance(card, dict) else lambda k, d=None: getattr(card, k, d)
    return check_input_scaling(get("input_scaling") or "minmax-per-patch")


def predict_batches(predictor: Predictor, patches: np.ndarray, *, batch_size: int,
                    denoised: bool = True,
                    attention_frames: slice | None = None) -> Iterator[tuple[int, Any]]:
    """Run ``patches`` ``(B, T, H, W)`` through the predictor ``batch_size`` at a time.
    ``attention_frames``: the frames over which the caller sums the attention maps (see
    :func:`start_predict`).

    Yields
    ------
    (first, outputs)
        Index of the batch's first patch, and the predictor's outputs for that batch.
    """
    if patches.ndim != 4:
        raise ValueError(f"patches must be (B, T, H, W), got shape {patches.shape}")
    for first in range(0, patches.shape[0], batch_size):
        batch = np.ascontiguousarray(patches[first:first + batch_size], dtype=np.float32)
        weights = (None if attention_frames is None
                   else frame_weights(batch.shape[1], attention_frames, batch.shape[0]))
        outputs = start_predict(predictor, batch, denoised=denoised, attention_frames=weights)()
        yield first, checked_outputs(outputs, batch.shape[0], denoised=denoised)


def checked_outputs(outputs: Any, n_patches: int, *, denoised: bool = True) -> PatchOutputs:
    """A predictor's outputs as numpy :class:`PatchOutputs` (without ``denoised`` unless asked
    for); ``RuntimeError`` unless they hold ``n_patches`` results."""
    arrays = {key: None if key in OPTIONAL_OUTPUTS and not denoised
              else np.asarray(getattr(outputs, key)) for key in SERVING_OUTPUTS}
    if arrays["traces"].shape[0] != n_patches:
        raise RuntimeError(f"the model returned {arrays['traces'].shape[0]} results for "
                           f"{n_patches} patches")
    return PatchOutputs(**arrays)
