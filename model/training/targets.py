"""Training targets of one simulated patch: which cells count, in which order, and how.

A cell is a *target neuron* of a patch when at least ``min_visible`` of its soma lies in the patch
and its dF/F reaches ``min_dff`` inside the patch's frames; silent cells never are. Targets are
ordered by activity onset (the first frame where dF/F reaches ``min_dff``, which follows the first
spike) and the first N are kept; unused channels stay zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ATTENTION_THRESHOLD = 0.05


@dataclass(frozen=True)
class PatchTargets:
    """Targets of one patch (see ``docs/lstm-ista`` notes for the published definitions).

    Attributes
    ----------
    clean : ndarray, shape (T, H, W), float32
        Activity of every cell (``sum_k footprint_k * baseline_k * dF/F_k``) divided by its patch
        maximum: in [0, 1], all zero without activity.
    masks : ndarray, shape (N, H, W), float32
        Soma masks (0/1) of the target neurons in onset order; unused channels zero.
    traces : ndarray, shape (T, N), float32
        dF/F of each target neuron divided by its maximum in the patch (unused channels zero).
    attention : ndarray, shape (T, H, W), float32
        1 where ``sum_n masks_n * traces_n(t) >= 0.05``.
    cells : ndarray, shape (n,), int64
        Scene indices of the target neurons, in channel order.
    """

    clean: np.ndarray
    masks: np.ndarray
    traces: np.ndarray
    attention: np.ndarray
    cells: np.ndarray


def select_targets(soma_in_patch: np.ndarray, soma_area: np.ndarray, dff: np.ndarray, *,
                   max_neurons: int, min_visible: float = 0.3, min_dff: float = 0.1
                   ) -> np.ndarray:
    """Indices of the target neurons, ordered by activity onset, at most ``max_neurons``.

    Parameters
    ----------
    soma_in_patch : ndarray, shape (K,)
        Soma pixels of each cell inside the patch.
    soma_area : ndarray, shape (K,)
        Whole soma area of each cell in pixels.
    dff : ndarray, shape (K, T)
        dF/F of each cell during the patch's frames.
    """
    if dff.shape[0] == 0:
        return np.zeros(0, np.int64)
    visible = soma_in_patch >= min_visible * np.maximum(soma_area, 1)
    active = dff >= min_dff
    ok = np.flatnonzero(visible & active.any(axis=1))
    onset = active[ok].argmax(axis=1)
    order = ok[np.argsort(onset, kind="stable")]
    return order[:max_neurons].astype(np.int64)


def build_targets(cells: np.ndarray, soma_masks: np.ndarray, dff: np.ndarray,
                  signal: np.ndarray, n_channels: int) -> PatchTargets:
    """Assemble the targets of one patch.

    Parameters
    ----------
    cells : ndarray, shape (n,)
        Target neurons from :func:`select_targets`.
    soma_masks : ndarray, shape (K, H, W), bool
        Soma masks of all cells, cropped to the patch.
    dff : ndarray, shape (K, T)
        dF/F of all cells over the patch's frames.
    signal : ndarray, shape (T, H, W)
        Activity of all cells (``sum_k footprint_k * baseline_k * dF/F_k``), cropped to the patch.
    n_channels : int
        N, the network's number of footprint channels.
    """
    t, h, w = signal.shape
    masks = np.zeros((n_channels, h, w), np.float32)
    traces = np.zeros((t, n_channels), np.float32)
    for ch, k in enumerate(cells):
        masks[ch] = soma_masks[k]
        peak = float(dff[k].max())
        traces[:, ch] = dff[k] / peak if peak > 0 else 0.0
    top = float(signal.max())
    clean = (signal / top if top > 0 else np.zeros_like(signal)).astype(np.float32)
    activity = np.einsum("nhw,tn->thw", masks, traces)
    attention = (activity >= ATTENTION_THRESHOLD).astype(np.float32)
    return PatchTargets(clean=clean, masks=masks, traces=traces, attention=attention,
                        cells=np.asarray(cells, np.int64))
