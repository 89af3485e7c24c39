"""Shared helpers for the network tests: the published mini fixture and science metrics.

Imported explicitly (``from conftest_network import ...``); holds no pytest fixtures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io as sio

REPO = Path(__file__).resolve().parents[2]
# The published fixture ships with the tests (tests/fixtures/deepcaimx-mini, MIT, see its
# README.md); CAIMX_MINI_DATA points the tests at another copy. A missing file is an error.
DATA_DIR = Path(os.environ.get("CAIMX_MINI_DATA", REPO / "tests/fixtures/deepcaimx-mini"))
PUBLISHED_H5 = DATA_DIR / "DeepCaImX_model_mini.h5"
LICENSE_FILE = DATA_DIR / "LICENSE-DeepCaImX.txt"
SAMPLES = (1, 2, 3)
REFERENCE_KEYS = (
    "denoised", "sparse", "symmetry", "attention", "raw_masks", "opened_masks", "traces",
)  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """One simulated test sample: noisy ``video`` and ``clean`` (T, H, W), ``masks`` (n, H, W),
    ``traces`` (n, T) for the n ground-truth neurons (n = 0 for sample 1)."""

    video: np.ndarray
    clean: np.ndarray
    masks: np.ndarray
    traces: np.ndarray


def load_sample(k: int) -> Sample:
    def mat(kind: str, key: str) -> np.ndarray:
        return np.asarray(sio.loadmat(DATA_DIR / f"LSTM_{kind}_{k}.mat")[key], dtype=np.float32)

    video = np.transpose(mat("Video", "LSTM_video"), (2, 0, 1))
    clean = np.transpose(mat("Data", "LSTM_data"), (2, 0, 1))
    masks = np.transpose(mat("Masks", "LSTM_mask"), (2, 0, 1))
    traces = mat("Trace", "LSTM_trace")
    keep = [i for i in range(masks.shape[0]) if masks[i].any()]
    return Sample(video, clean, masks[keep], traces[keep])


def load_reference(k: int) -> dict[str, np.ndarray]:
    with np.load(DATA_DIR / f"reference_outputs_{k}.npz") as npz:
        return {key: npz[key] for key in npz.files}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    total = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / total) if total else 1.0


@dataclass(frozen=True)
class Science:
    """Footprint count, per-GT-neuron best Dice and trace r, and denoising r."""

    n_found: int
    n_true: int
    dice: list[float]
    trace_r: list[float]
    denoise_r: float | None


def science(sample: Sample, denoised: np.ndarray, footprints: np.ndarray,
            traces_nt: np.ndarray, offset: int = 2) -> Science:
    """Compare one sample's outputs with its ground truth.

    ``denoised`` (T, H, W), ``footprints`` (N, H, W) opened masks, ``traces_nt`` (N, T-4);
    output trace frame i lines up with ground-truth frame i + ``offset``.
    """
    found = [j for j in range(footprints.shape[0]) if footprints[j].any()]
    dices, rs = [], []
    for mask, trace in zip(sample.masks, sample.traces, strict=True):
        scores = [dice(mask, footprints[j]) for j in found]
        if not scores:
            dices.append(0.0)
            rs.append(0.0)
            continue
        best = found[int(np.argmax(scores))]
        dices.append(max(scores))
        target = trace[offset : offset + traces_nt.shape[1]]
        rs.append(float(np.corrcoef(traces_nt[best], target)[0, 1]))
    denoise_r = None
    if sample.clean.std() > 0:
        denoise_r = float(np.corrcoef(denoised.ravel(), sample.clean.ravel())[0, 1])
    return Science(len(found), len(sample.masks), dices, rs, denoise_r)


def assert_science(result: Science) -> None:
    assert result.n_found == result.n_true
    assert all(d >= 0.8 for d in result.dice), result.dice
    assert all(r >= 0.96 for r in result.trace_r), result.trace_r
    if result.denoise_r is not None:
        assert result.denoise_r >= 0.9, result.denoise_r
