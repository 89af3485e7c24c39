"""Validation on a fixed held-out set of simulated patches.

Neurons are read from the network the way the engine reads them: a channel is a neuron when its
opened mask has at least ``min_area`` pixels above ``mask_threshold`` (the engine's
:class:`~model.inference.params.DecideParams` defaults). Found and true masks are matched one to
one (Hungarian, IoU >= 0.5) by :func:`model.evaluate.evaluate`. Counts are pooled over patches
(micro precision/recall/F1); Dice and trace r are means over matched pairs. False positives on
empty and silent-only patches are reported on their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from model.evaluate import evaluate, pearson
from model.inference.params import DecideParams
from model.training.patches import PatchSample, TrainingData, make_sample

#: Seed namespace of held-out sets: never used by training streams (which use the run's seed).
HELD_OUT_SEED = 2_000_003
_DECIDE = DecideParams()


@dataclass(frozen=True)
class PatchOutputs:
    """What validation needs from the network for a batch.

    Attributes
    ----------
    masks : ndarray, shape (B, N, H, W)
        Opened masks.
    traces : ndarray, shape (B, T - 4, N)
    """

    masks: np.ndarray
    traces: np.ndarray


def held_out_set(data: TrainingData, *, count: int, frames: int, size: tuple[int, int],
                 n_channels: int, seed: int = HELD_OUT_SEED,
                 photons: float | None = None) -> list[PatchSample]:
    """A fixed set: 1/6 empty, 1/6 silent-only, the rest active patches.

    Parameters
    ----------
    photons : float, optional
        One SNR for every patch (for per-SNR tables); default drawn per patch.
    """
    n_empty = n_silent = count // 6
    kinds = ["empty"] * n_empty + ["silent"] * n_silent + ["active"] * (count - 2 * n_empty)
    return [make_sample(data, i, seed=seed, frames=frames, size=size, n_channels=n_channels,
                        kind=kind, photons=photons) for i, kind in enumerate(kinds)]


def found_neurons(masks: np.ndarray, *, threshold: float = _DECIDE.mask_threshold,
                  min_area: int = _DECIDE.min_area) -> np.ndarray:
    """Channels that are neurons: ``(masks > threshold).sum() >= min_area``; masks (N, H, W)."""
    area = (masks > threshold).sum(axis=(1, 2))
    return np.flatnonzero((area >= min_area) & (area > 0))


def score_patches(samples: Sequence[PatchSample], outputs: PatchOutputs) -> dict[str, float]:
    """Pooled detection scores, mean Dice, mean trace r and false positives per patch kind.

    Returns
    -------
    dict
        ``f1``, ``precision``, ``recall``, ``dice`` (mean over matches), ``trace_r``,
        ``n_true``, ``n_found``, ``fp_per_empty``, ``empty_with_fp`` (fraction of empty patches
        with any detection), ``fp_per_silent``, ``silent_with_fp``.
    """
    found_total = true_total = matched = 0
    dices: list[float] = []
    rs: list[float] = []
    fp = {"empty": [], "silent": []}
    for i, sample in enumerate(samples):
        channels = found_neurons(outputs.masks[i])
        found = outputs.masks[i][channels] > _DECIDE.mask_threshold
        t = sample.targets
        true_ch = np.flatnonzero(t.masks.reshape(len(t.masks), -1).max(axis=1) > 0)
        true = t.masks[true_ch] > 0.5
        if sample.kind in fp:
            fp[sample.kind].append(len(channels))
        score = evaluate(found, true)
        found_total += score.n_found
        true_total += score.n_true
        matched += score.n_matched
        trim = slice(2, 2 + outputs.traces.shape[1])
        for a, b in score.matches:
            iou = _iou(found[a], true[b])
            dices.append(2 * iou / (1 + iou))
            rs.append(pearson(outputs.traces[i][:, channels[a]], t.traces[trim, true_ch[b]]))
    precision = matched / found_total if found_total else float(true_total == 0)
    recall = matched / true_total if true_total else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out = {"f1": f1, "precision": precision, "recall": recall,
           "dice": float(np.mean(dices)) if dices else 0.0,
           "trace_r": float(np.mean(rs)) if rs else float("nan"),
           "n_true": float(true_total), "n_found": float(found_total)}
    for kind, counts in fp.items():
        out[f"fp_per_{kind}"] = float(np.mean(counts)) if counts else float("nan")
        out[f"{kind}_with_fp"] = float(np.mean(np.asarray(counts) > 0)) if counts else float("nan")
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def predict_samples(predict: Callable[[np.ndarray], PatchOutputs],
                    samples: Sequence[PatchSample], *, batch_size: int = 8) -> PatchOutputs:
    """Run ``predict`` (input ``(B, T, H, W, 1)``) over ``samples`` in batches."""
    masks, traces = [], []
    for start in range(0, len(samples), batch_size):
        x = np.stack([s.movie for s in samples[start:start + batch_size]])[..., None]
        out = predict(x.astype(np.float32))
        masks.append(out.masks)
        traces.append(out.traces)
    return PatchOutputs(masks=np.concatenate(masks), traces=np.concatenate(traces))


def keras_predictor(net) -> Callable[[np.ndarray], PatchOutputs]:
    """Adapter from a network of :func:`model.network.build_network` to :func:`predict_samples`."""
    def predict(x: np.ndarray) -> PatchOutputs:
        out = net.predict_on_batch(x)
        return PatchOutputs(masks=np.asarray(out["opened_masks"]),
                            traces=np.asarray(out["traces"]))
    return predict
