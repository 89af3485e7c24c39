"""The published training losses of the LSTM-ISTA network, in ``keras.ops`` (any backend).

As published, every loss is a sum or a single statistic over the whole batch tensor, not a mean
of per-sample values. Layouts follow :func:`model.network.build_network` outputs:

- ``denoised``, ``symmetry``, ``attention``: ``(B, T, H, W)``
- ``raw_masks``: ``(B, N, H, W)``
- ``traces``: ``(B, T - 4, N)``; target traces are ``(B, T, N)`` and are cropped here to frames
  ``2 .. T - 3`` (output frame ``i`` is input frame ``i + 2``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keras import ops

from model.network import TRACE_OFFSET

SMOOTH = 1e-6
SYMMETRY_WEIGHT = 0.01
ATTENTION_THRESHOLD = 0.05


def dice(x: Any, y: Any, smooth: float = SMOOTH) -> Any:
    """Soft Dice over all elements: ``(2 sum(x y) + s) / (sum(x + y) + s)``."""
    return (2.0 * ops.sum(x * y) + smooth) / (ops.sum(x + y) + smooth)


def pearson(x: Any, y: Any, smooth: float = SMOOTH) -> Any:
    """One Pearson correlation over all elements (global means); ``smooth`` in the denominator."""
    xm = x - ops.mean(x)
    ym = y - ops.mean(y)
    numerator = ops.sum(xm * ym)
    denominator = ops.sqrt(ops.sum(ops.square(xm)) * ops.sum(ops.square(ym)))
    return numerator / (denominator + smooth)


def denoise_loss(clean: Any, denoised: Any, symmetry: Any) -> Any:
    """``(sum((denoised - clean)^2) + 0.01 * sum(symmetry^2)) / T``; inputs ``(B, T, H, W)``."""
    frames = ops.cast(ops.shape(denoised)[1], denoised.dtype)
    error = ops.sum(ops.square(denoised - clean))
    return (error + SYMMETRY_WEIGHT * ops.sum(ops.square(symmetry))) / frames


def segmentation_loss(
    attention_target: Any, attention: Any, masks_target: Any, raw_masks: Any
) -> Any:
    """``10 * (0.1 * (1 - Dice(attention)) + 0.9 * (1 - Dice(raw masks)))``."""
    attention_term = 1.0 - dice(attention, attention_target)
    mask_term = 1.0 - dice(raw_masks, masks_target)
    return 10.0 * (0.1 * attention_term + 0.9 * mask_term)


def crop_target_traces(target_traces: Any) -> Any:
    """``(B, T, N) -> (B, T - 4, N)``: the frames the network's traces line up with."""
    length = ops.shape(target_traces)[1]
    return target_traces[:, TRACE_OFFSET : length - TRACE_OFFSET, :]


def trace_loss(target_traces: Any, traces: Any) -> Any:
    """``10 * (1 - r)``, ``r`` one Pearson correlation of ``traces`` ``(B, T-4, N)`` with the
    target traces ``(B, T, N)`` cropped to frames ``2 .. T-3``."""
    return 10.0 * (1.0 - pearson(traces, crop_target_traces(target_traces)))


def attention_target(masks: Any, traces: Any, threshold: float = ATTENTION_THRESHOLD) -> Any:
    """Pixels where ``sum_n mask_n * trace_n(t) >= threshold``.

    ``masks`` ``(B, N, H, W)``, ``traces`` ``(B, T, N)`` -> float ``(B, T, H, W)`` of 0/1.
    """
    activity = ops.einsum("bnhw,btn->bthw", masks, traces)
    return ops.cast(activity >= threshold, masks.dtype)


def published_losses(targets: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
    """All three published losses and their sum.

    ``targets``: ``clean`` ``(B,T,H,W)``, ``attention`` ``(B,T,H,W)``, ``masks`` ``(B,N,H,W)``
    ordered by first spike (unused channels zero), ``traces`` ``(B,T,N)``.
    ``outputs``: the dict returned by the network.
    """
    losses = {
        "denoise": denoise_loss(targets["clean"], outputs["denoised"], outputs["symmetry"]),
        "segmentation": segmentation_loss(
            targets["attention"], outputs["attention"], targets["masks"], outputs["raw_masks"]
        ),
        "trace": trace_loss(targets["traces"], outputs["traces"]),
    }
    losses["total"] = losses["denoise"] + losses["segmentation"] + losses["trace"]
    return losses
