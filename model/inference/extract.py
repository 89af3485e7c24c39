"""Fluorescence of each neuron read from the movie itself, with its neuropil, as Suite2p reports it.

The network's traces come from patches it saw once per window, often with the cell cut by the patch
border; scientists also want the classic measurement: the footprint-weighted mean of the raw
(motion-corrected) frames, ``F``, and the mean of a ring of pixels around the cell that belong to no
cell, ``Fneu``. ``F - neuropil_coefficient * Fneu`` is the neuropil-corrected trace. Both are read
in one streaming pass over the movie after the neurons are known (a block of frames at a time, so
memory does not grow with the movie).

Where somata overlap, each cell's ``F`` also holds light of its neighbours. :func:`demix` undoes
that from the footprints alone (no second pass over the movie): with ``M[k, j]`` the share of cell
``j``'s footprint inside cell ``k``'s weighted mean, ``F_corrected = M @ S``, and the demixed
activity ``S`` is solved per group of overlapping cells (regularized least squares).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from model import rigid
from model.inference import motion
from model.inference.params import MotionParams
from model.inference.source import as_movie, frames_per_read
from model.results import FOOTPRINT_SLAB


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


@dataclass(frozen=True)
class PlacedFootprints:
    """Footprints as the engine holds them before writing: ``(y0, x0, values)`` per neuron,
    ``values`` ``(h, w)`` inside frames of ``frame_shape``; read like a ``(K, H, W)`` stack by
    :func:`extraction_weights` without building one."""

    boxes: list[tuple[int, int, np.ndarray]]
    frame_shape: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.boxes), *self.frame_shape)


def extraction_weights(footprints: Any, ring: NeuropilRing = NeuropilRing(),
                       ) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:  # fmt: skip
    """Sparse ``(K, H*W)`` weights of each cell (its footprint, summing to 1) and of its neuropil
    ring (uniform over the ring, summing to 1; an empty row when no free pixel is near).

    ``footprints`` ``(K, H, W)`` is read a slab of neurons at a time, once (a Zarr array stays on
    disk), or taken box by box from :class:`PlacedFootprints`; each ring is grown inside the
    neuron's bounding box plus its reach, so memory and time follow the neurons' sizes, not
    K x H x W.
    """
    k, height, width = footprints.shape
    occupied = np.zeros((height, width), bool)
    pixels = []  # (k, ys, xs, values) of each neuron's positive pixels: the file is read once
    for i, ys, xs, values in _footprint_pixels(footprints):
        if len(ys):
            pixels.append((i, ys, xs, values))
            occupied[ys, xs] = True
    if k and ring.gap:
        occupied = ndimage.binary_dilation(occupied, iterations=ring.gap)
    reach = ring.gap + ring.width
    cell: tuple[list, list, list] = ([], [], [])
    neuropil: tuple[list, list, list] = ([], [], [])
    for i, ys, xs, weights in pixels:
        _append(cell, i, ys * width + xs, weights / weights.sum())
        y0, y1 = max(ys.min() - reach, 0), min(ys.max() + reach + 1, height)
        x0, x1 = max(xs.min() - reach, 0), min(xs.max() + reach + 1, width)
        on = np.zeros((y1 - y0, x1 - x0), bool)
        on[ys - y0, xs - x0] = True
        grown = ndimage.binary_dilation(on, iterations=reach)
        ry, rx = np.nonzero(grown & ~occupied[y0:y1, x0:x1])
        if len(ry):
            _append(neuropil, i, (ry + y0) * width + (rx + x0), np.full(len(ry), 1 / len(ry)))
    shape = (k, height * width)
    return _csr(cell, shape), _csr(neuropil, shape)


def _footprint_pixels(footprints: Any,
                      ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
    """``(k, ys, xs, values)`` of each footprint's positive pixels (row-major, float32 values);
    a stack is read :data:`~model.results.FOOTPRINT_SLAB` neurons at a time."""
    if isinstance(footprints, PlacedFootprints):
        for k, (y0, x0, values) in enumerate(footprints.boxes):
            values = np.asarray(values, np.float32)
            ys, xs = np.nonzero(values > 0)
            yield k, ys + y0, xs + x0, values[ys, xs]
        return
    for first in range(0, footprints.shape[0], FOOTPRINT_SLAB):
        block = np.asarray(footprints[first:first + FOOTPRINT_SLAB], np.float32)
        for k, values in enumerate(block, start=first):
            ys, xs = np.nonzero(values > 0)
            yield k, ys, xs, values[ys, xs]


def _append(parts: tuple[list, list, list], row: int, columns: np.ndarray,
            values: np.ndarray) -> None:  # fmt: skip
    parts[0].append(np.full(len(columns), row))
    parts[1].append(columns)
    parts[2].append(values.astype(np.float32))


def _csr(parts: tuple[list, list, list], shape: tuple[int, int]) -> sparse.csr_matrix:
    if not parts[0]:
        return sparse.csr_matrix(shape, dtype=np.float32)
    rows, columns, values = (np.concatenate(p) for p in parts)
    return sparse.csr_matrix((values, (rows, columns)), shape=shape, dtype=np.float32)


def extract_fluorescence(movie: Any, footprints: Any, *,
                         reference: np.ndarray | None = None,
                         motion_params: MotionParams | None = None,
                         ring: NeuropilRing = NeuropilRing(),
                         block_frames: int | None = None, threads: int = 1,
                         shifts: np.ndarray | None = None,
                         ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``F`` and ``Fneu``, each ``(K, T)`` float32, from ``movie`` ``(T, H, W)`` (read lazily).

    With ``reference`` (the engine's motion reference at the movie's resolution) each block of
    frames is motion-corrected first, as the network's input was. ``threads`` blocks are read and
    corrected at once (the FFTs of motion correction release the GIL); each holds
    ``block_frames`` frames in memory (default: about 16 MB of them,
    :func:`~model.inference.source.frames_per_read`). ``shifts`` ``(T, 2)``, the shifts already
    estimated against that reference (by the engine's chunks), are applied instead of being
    estimated again.
    """
    movie = as_movie(movie)
    n_frames, height, width = movie.shape
    block_frames = block_frames or frames_per_read(movie)
    if footprints.shape[1:] != (height, width):
        raise ValueError(f"footprints {footprints.shape[1:]} do not match the movie's frames "
                         f"{(height, width)}")  # fmt: skip
    if shifts is not None and shifts.shape != (n_frames, 2):
        raise ValueError(f"shifts {shifts.shape} do not match the movie's {n_frames} frames")
    cell_w, ring_w = extraction_weights(footprints, ring)
    k = footprints.shape[0]
    fluorescence = np.zeros((k, n_frames), np.float32)
    neuropil = np.zeros((k, n_frames), np.float32)
    if not k:
        return fluorescence, neuropil
    used, weights = _compact(sparse.vstack([cell_w, ring_w]).tocsr())
    sampler = rigid.PixelSampler((height, width), used)

    def measure(t0: int) -> tuple[int, np.ndarray, np.ndarray]:
        t1 = min(t0 + block_frames, n_frames)
        frames = np.asarray(movie.read(t0, t1))
        moved = shifts[t0:t1] if shifts is not None else None
        if moved is not None and np.any(moved):
            # moved where a cell or ring reads them, not whole frames: the same values
            values = sampler(frames, -moved[:, 0], -moved[:, 1])
        else:
            if moved is None and reference is not None:  # shifts not known: estimated here
                frames = motion.correct(frames, reference, params=motion_params or MotionParams())
            # (known shifts all zero: the frames are in place, no float32 copy of them)
            values = np.take(frames.reshape(t1 - t0, -1), used, axis=1)
        # the pixels any cell or ring uses, pixel-major: the sparse product then reads rows
        # (15 ms for 100k pixels x 128 frames) instead of a transposed view of the whole block
        pixels = np.ascontiguousarray(values.T, dtype=np.float32)
        sums = weights @ pixels
        return t0, sums[:k], sums[k:]

    starts = range(0, n_frames, block_frames)
    with ThreadPoolExecutor(max_workers=max(threads, 1),
                            thread_name_prefix="caimx-extract") as pool:
        for t0, f, fneu in pool.map(measure, starts):
            fluorescence[:, t0:t0 + f.shape[1]] = f
            neuropil[:, t0:t0 + f.shape[1]] = fneu
    return fluorescence, neuropil


def _compact(weights: sparse.csr_matrix) -> tuple[np.ndarray, sparse.csr_matrix]:
    """The pixel columns ``weights`` uses, and ``weights`` on those columns alone."""
    used = np.unique(weights.indices)
    column = np.zeros(weights.shape[1], np.int64)
    column[used] = np.arange(len(used))
    return used, sparse.csr_matrix((weights.data, column[weights.indices], weights.indptr),
                                   shape=(weights.shape[0], len(used)))


def mixing_matrix(footprints: Any) -> sparse.csr_matrix:
    """``M`` ``(K, K)``: ``M[k, j]`` = cell ``k``'s extraction weights (its footprint, summing to
    1, as in :func:`extraction_weights`) applied to cell ``j``'s footprint, i.e. how much of cell
    ``j``'s signal is in cell ``k``'s ``F``. Off-diagonal entries are non-zero only where cells
    overlap. ``footprints`` is read one neuron at a time."""
    k, height, width = footprints.shape
    parts: tuple[list, list, list] = ([], [], [])
    for i in range(k):
        values = np.clip(np.asarray(footprints[i], np.float32), 0, None).ravel()
        columns = np.flatnonzero(values)
        _append(parts, i, columns, values[columns])
    amplitude = _csr(parts, (k, height * width))
    sums = np.asarray(amplitude.sum(axis=1)).ravel()
    weights = sparse.diags(np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0))
    return sparse.csr_matrix(weights @ amplitude @ amplitude.T)


def demix(traces: np.ndarray, footprints: Any, *, ridge: float = 0.05) -> np.ndarray:
    """Separate the activity of overlapping cells in ``traces`` ``(K, T)`` (``F - c * Fneu``).

    Each connected group of overlapping cells is solved by ridge-regularized least squares
    ``(M'M + ridge * m^2 I) S = M' F`` (``m`` the group's mean diagonal), so that two nearly
    identical footprints cannot blow the noise up; a cell that overlaps nobody is only divided by
    its ``M[k, k]``. Pearson correlations of cells without overlap are unchanged.
    """
    traces = np.asarray(traces, np.float32)
    k = traces.shape[0]
    if not k:
        return traces.copy()
    m = mixing_matrix(footprints)
    diagonal = m.diagonal()
    off = (m - sparse.diags(diagonal)).tocsr()
    off.eliminate_zeros()
    n_groups, labels = csgraph.connected_components(off + off.T, directed=False)
    out = np.zeros_like(traces)
    for group in range(n_groups):
        members = np.flatnonzero(labels == group)
        if len(members) == 1:
            i = members[0]
            out[i] = traces[i] / diagonal[i] if diagonal[i] > 0 else 0.0
            continue
        block = m[members][:, members].toarray().astype(np.float64)
        scale = float(np.mean(np.diag(block))) ** 2
        lhs = block.T @ block + ridge * scale * np.eye(len(members))
        out[members] = np.linalg.solve(lhs, block.T @ traces[members].astype(np.float64))
    return out
