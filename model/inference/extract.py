"""Fluorescence of each neuron read from the movie itself, with its neuropil, as Suite2p reports it.

The network's traces come from patches it saw once per window, often with the cell cut by the patch
border; scientists also want the classic measurement: the footprint-weighted mean of the raw
(motion-corrected) frames, ``F``, and the mean of a ring of pixels around the cell that belong to no
cell, ``Fneu``. ``F - neuropil_coefficient * Fneu`` is the neuropil-corrected trace. Both are read
in one streaming pass over the movie after the neurons are known (a block of frames at a time, so
memory does not grow with the movie).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage, sparse

from model.inference import motion
from model.inference.params import MotionParams
from model.inference.source import as_movie


@dataclass(frozen=True)
class NeuropilRing:
    """The pixels around a cell that measure its neuropil.

    Attributes
    ----------
    gap : int
        Pixels left out next to every cell (their light still holds some of the cell's).
    width : int
        How far the ring reaches from the cell, in pixels.
    coefficient : float
        ``F - coefficient * Fneu`` is the corrected trace (Suite2p's default, 0.7).
    """

    gap: int = 2
    width: int = 8
    coefficient: float = 0.7

    def to_dict(self) -> dict[str, Any]:
        return {"gap": self.gap, "width": self.width, "coefficient": self.coefficient}


def extraction_weights(footprints: np.ndarray, ring: NeuropilRing = NeuropilRing(),
                       ) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:  # fmt: skip
    """Sparse ``(K, H*W)`` weights of each cell (its footprint, summing to 1) and of its neuropil
    ring (uniform over the ring, summing to 1; an empty row when no free pixel is near)."""
    k, height, width = footprints.shape
    cells = np.clip(np.asarray(footprints, np.float32), 0, None)
    occupied = ndimage.binary_dilation(cells.max(axis=0) > 0, iterations=ring.gap) \
        if k else np.zeros((height, width), bool)
    cell_rows, ring_rows = [], []
    for values in cells:
        flat = values.ravel()
        total = flat.sum()
        cell_rows.append(flat / total if total > 0 else flat)
        reach = ndimage.binary_dilation(values > 0, iterations=ring.gap + ring.width) & ~occupied
        n = reach.sum()
        ring_rows.append(reach.ravel().astype(np.float32) / n if n else np.zeros(flat.size,
                                                                                 np.float32))
    shape = (k, height * width)
    if not k:
        return sparse.csr_matrix(shape, dtype=np.float32), sparse.csr_matrix(shape,
                                                                              dtype=np.float32)
    return sparse.csr_matrix(np.stack(cell_rows)), sparse.csr_matrix(np.stack(ring_rows))


def extract_fluorescence(movie: Any, footprints: np.ndarray, *,
                         reference: np.ndarray | None = None,
                         motion_params: MotionParams | None = None,
                         ring: NeuropilRing = NeuropilRing(),
                         block_frames: int = 128) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``F`` and ``Fneu``, each ``(K, T)`` float32, from ``movie`` ``(T, H, W)`` (read lazily).

    With ``reference`` (the engine's motion reference at the movie's resolution) each block of
    frames is motion-corrected first, as the network's input was.
    """
    movie = as_movie(movie)
    n_frames, height, width = movie.shape
    if footprints.shape[1:] != (height, width):
        raise ValueError(f"footprints {footprints.shape[1:]} do not match the movie's frames "
                         f"{(height, width)}")  # fmt: skip
    cell_w, ring_w = extraction_weights(footprints, ring)
    k = footprints.shape[0]
    fluorescence = np.zeros((k, n_frames), np.float32)
    neuropil = np.zeros((k, n_frames), np.float32)
    if not k:
        return fluorescence, neuropil
    for t0 in range(0, n_frames, block_frames):
        t1 = min(t0 + block_frames, n_frames)
        frames = np.asarray(movie.read(t0, t1), dtype=np.float32)
        if reference is not None:
            frames = motion.correct(frames, reference, params=motion_params or MotionParams())
        pixels = frames.reshape(t1 - t0, -1).T  # (H*W, t)
        fluorescence[:, t0:t1] = cell_w @ pixels
        neuropil[:, t0:t1] = ring_w @ pixels
    return fluorescence, neuropil
