"""Score found neurons against ground truth (no TensorFlow).

Footprints are binarized (``> threshold``), matched one to one with the Hungarian algorithm
(:func:`scipy.optimize.linear_sum_assignment`) on IoU, and a pair counts as a match when its IoU is
at least ``min_iou`` (0.5). Precision = matches / found, recall = matches / true, F1 their harmonic
mean; mean IoU is averaged over the matches. The Pearson r of the traces is averaged over the
matches whose true trace varies: the true dF/F of a silent cell is constant, so no correlation is
defined for it (counting it as 0 would punish finding silent cells, which a footprint-based method
should). A found trace that is constant against a varying true one counts as r = 0.

True cells can be marked *ignored* (e.g. cells mostly outside the frame, of which only a sliver
of a few pixels is visible): they take part in the matching, but a found neuron matched to one
counts neither as a match nor as a false detection, and an ignored cell left unmatched is not a
miss (the "don't care" regions of detection benchmarks).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class Score:
    """Detection and trace scores (JSON-able through :meth:`to_dict`)."""

    n_found: int
    n_true: int
    n_matched: int
    precision: float
    recall: float
    f1: float
    mean_iou: float
    trace_r: float
    matches: list[tuple[int, int]]
    n_trace_pairs: int = 0
    n_ignored_true: int = 0
    n_ignored_found: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["matches"] = [list(m) for m in self.matches]
        return d


def iou_matrix(found: np.ndarray, true: np.ndarray) -> np.ndarray:
    """IoU of every pair of binary masks.

    Parameters
    ----------
    found : ndarray, shape (K, H, W), bool
    true : ndarray, shape (J, H, W), bool

    Returns
    -------
    ndarray, shape (K, J), float64
    """
    pixels = int(np.prod(found.shape[1:]))
    a = found.reshape(found.shape[0], pixels).astype(np.float32)
    b = true.reshape(true.shape[0], pixels).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0).astype(np.float64)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two 1-D traces (0 when either is constant)."""
    x = np.asarray(x, np.float64) - np.mean(x)
    y = np.asarray(y, np.float64) - np.mean(y)
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else 0.0


def evaluate(found_footprints: np.ndarray, true_footprints: np.ndarray, *,
             found_traces: np.ndarray | None = None, true_traces: np.ndarray | None = None,
             threshold: float = 0.0, true_threshold: float = 0.5, min_iou: float = 0.5,
             ignore: np.ndarray | None = None) -> Score:
    """Match found neurons to true ones and score them.

    Parameters
    ----------
    found_footprints : ndarray, shape (K, H, W)
        Binarized with ``> threshold``.
    true_footprints : ndarray, shape (J, H, W)
        Binarized with ``>= true_threshold`` (bool masks pass unchanged).
    found_traces, true_traces : ndarray, shape (K, T) and (J, T), optional
        When both are given, ``trace_r`` is the mean Pearson r of the matched pairs whose true
        trace is not constant (``n_trace_pairs`` of them; NaN when there are none).
    min_iou : float
        Smallest IoU of a match.
    ignore : ndarray, shape (J,), bool, optional
        True cells that are neither to be found nor a false detection when found
        (``n_ignored_true`` of them; ``n_ignored_found`` found neurons matched them and are left
        out of ``n_found``).
    """
    if found_footprints.shape[1:] != true_footprints.shape[1:]:
        raise ValueError(f"frame sizes differ: {found_footprints.shape[1:]} vs "
                         f"{true_footprints.shape[1:]}")
    found = np.asarray(found_footprints) > threshold
    true = np.asarray(true_footprints)
    true = true if true.dtype == bool else true >= true_threshold
    iou = iou_matrix(found, true)
    pairs: list[tuple[int, int]] = []
    if iou.size:
        rows, cols = linear_sum_assignment(-iou)
        pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= min_iou]
    k, j = found.shape[0], true.shape[0]
    n_ignored_true = n_ignored_found = 0
    if ignore is not None:
        ignore = np.asarray(ignore, bool)
        if ignore.shape != (j,):
            raise ValueError(f"ignore has shape {ignore.shape}, expected ({j},)")
        n_ignored_true = int(ignore.sum())
        n_ignored_found = sum(1 for _, b in pairs if ignore[b])
        pairs = [(a, b) for a, b in pairs if not ignore[b]]
        k, j = k - n_ignored_found, j - n_ignored_true
    m = len(pairs)
    precision = m / k if k else (1.0 if j == 0 else 0.0)
    recall = m / j if j else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    mean_iou = float(np.mean([iou[a, b] for a, b in pairs])) if pairs else 0.0
    trace_r, rs = float("nan"), []
    if found_traces is not None and true_traces is not None:
        rs = [pearson(found_traces[a], true_traces[b]) for a, b in pairs
              if np.ptp(np.asarray(true_traces[b])) > 0]
        trace_r = float(np.mean(rs)) if rs else float("nan")
    return Score(n_found=k, n_true=j, n_matched=m, precision=precision, recall=recall, f1=f1,
                 mean_iou=mean_iou, trace_r=trace_r, matches=pairs, n_trace_pairs=len(rs),
                 n_ignored_true=n_ignored_true, n_ignored_found=n_ignored_found)
