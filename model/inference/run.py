"""Batch patches through a predictor (a loaded SavedModel, or anything with the same members)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from model.inference.scaling import check_input_scaling
from model.outputs import SERVING_OUTPUTS, PatchOutputs


class Predictor(Protocol):
    """What the engine needs from a model: its card and ``predict``.

    ``predict(patches)`` takes float32 ``(B, T, H, W)`` in [0, 1] (scaled as the card's
    ``input_scaling`` says) and returns an
    object with numpy fields ``denoised`` and ``attention`` ``(B, T, H, W)``, ``footprints`` (opened
    masks) and ``raw_footprints`` ``(B, N, H, W)``, and ``traces`` ``(B, N, T - 4)``.
    """

    card: Any

    def predict(self, patches: np.ndarray) -> Any: ...


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


def predict_batches(predictor: Predictor, patches: np.ndarray, *,
                    batch_size: int) -> Iterator[tuple[int, Any]]:
    """Run ``patches`` ``(B, T, H, W)`` through the predictor ``batch_size`` at a time.

    Yields
    ------
    (first, outputs)
        Index of the batch's first patch, and the predictor's outputs for that batch.
    """
    if patches.ndim != 4:
        raise ValueError(f"patches must be (B, T, H, W), got shape {patches.shape}")
    for first in range(0, patches.shape[0], batch_size):
        batch = np.ascontiguousarray(patches[first:first + batch_size], dtype=np.float32)
        yield first, checked_outputs(predictor.predict(batch), batch.shape[0])


def checked_outputs(outputs: Any, n_patches: int) -> PatchOutputs:
    """A predictor's outputs as numpy :class:`PatchOutputs`; ``RuntimeError`` unless they hold
    ``n_patches`` results."""
    arrays = {key: np.asarray(getattr(outputs, key)) for key in SERVING_OUTPUTS}
    if arrays["traces"].shape[0] != n_patches:
        raise RuntimeError(f"the model returned {arrays['traces'].shape[0]} results for "
                           f"{n_patches} patches")
    return PatchOutputs(**arrays)
