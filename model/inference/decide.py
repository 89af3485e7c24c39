"""Which network channels become neurons.

Each connected part (4-connected pixels above ``mask_threshold``, inside the real frame) of one
channel's opened mask is a *candidate*: the network can put two separate somata in one channel,
and each becomes its own candidate. After stitching, a *neuron* is kept when all of these hold
(each threshold a :class:`~model.inference.params.DecideParams` field; the evidence for each in
``docs/decision-rules.md``):

- its footprint has at least ``min_area`` pixels;
- it was detected in at least ``min_window_fraction`` of the movie's windows (false detections
  rarely recur, somata do);
- it stands out as a soma: in the mean image its footprint is brighter than the bright part of
  its surroundings (:func:`soma_contrast` >= ``min_contrast``; where the mean image shows somata
  at all, ``model.inference.resample.shows_somata``); a neuron that fails only this test is
  measured again with the clear somata among the kept neurons (contrast >=
  ``bright_neighbour_contrast``) left out of its ring (dense fields).

Each candidate's transient SNR (its fluorescence less its ring's) and each neuron's share of the
covering tiles that detected it are measured and recorded with the result, but decide nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse

from model.inference.params import DecideParams


@dataclass(frozen=True)
class Candidates:
    """Candidates of one chunk, as flat arrays (cheap to store, byte-stable on disk).

    Attributes
    ----------
    tile : (n,) int32
        Plan tile index.
    channel : (n,) int32
        Network output channel.
    bbox : (n, 4) int32
        ``(y0, x0, h, w)`` of the mask in real frame coordinates.
    mask_offsets : (n + 1,) int64
        Start of each mask in ``masks``.
    masks : (sum h*w,) float32
        Opened-mask values, row-major per candidate.
    traces : (n, L) float32
        Network traces times the patch divisor (movie-range units); frame i is window frame i.
    snr : (n,) float32
        Transient SNR of the raw fluorescence under the binarized mask.
    """

    tile: np.ndarray
    channel: np.ndarray
    bbox: np.ndarray
    mask_offsets: np.ndarray
    masks: np.ndarray
    traces: np.ndarray
    snr: np.ndarray

    def __len__(self) -> int:
        return int(self.tile.shape[0])

    def mask(self, i: int) -> np.ndarray:
        """Mask ``i`` as ``(h, w)`` float32."""
        h, w = int(self.bbox[i, 2]), int(self.bbox[i, 3])
        return self.masks[self.mask_offsets[i]:self.mask_offsets[i + 1]].reshape(h, w)

    @classmethod
    def empty(cls, trace_length: int) -> Candidates:
        return cls(
            tile=np.zeros(0, np.int32), channel=np.zeros(0, np.int32),
            bbox=np.zeros((0, 4), np.int32),
            mask_offsets=np.zeros(1, np.int64), masks=np.zeros(0, np.float32),
            traces=np.zeros((0, trace_length), np.float32), snr=np.zeros(0, np.float32),
        )

    def take(self, indices: np.ndarray) -> Candidates:
        """The candidates at ``indices`` (ascending or not), as new arrays."""
        indices = np.asarray(indices, np.int64)
        sizes = np.diff(self.mask_offsets)[indices]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        starts = self.mask_offsets[indices]
        at = np.arange(offsets[-1]) - np.repeat(offsets[:-1] - starts, sizes)
        return type(self)(tile=self.tile[indices], channel=self.channel[indices],
                          bbox=self.bbox[indices], mask_offsets=offsets, masks=self.masks[at],
                          traces=self.traces[indices], snr=self.snr[indices])

    @classmethod
    def concat(cls, parts: list[Candidates], trace_length: int) -> Candidates:
        if not parts:
            return cls.empty(trace_length)
        sizes = [p.masks.shape[0] for p in parts]
        shifts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        offsets = [p.mask_offsets[:-1] + s for p, s in zip(parts, shifts, strict=True)]
        offsets.append(np.array([sum(sizes)], np.int64))
        return cls(
            tile=np.concatenate([p.tile for p in parts]),
            channel=np.concatenate([p.channel for p in parts]),
            bbox=np.concatenate([p.bbox for p in parts]),
            mask_offsets=np.concatenate(offsets),
            masks=np.concatenate([p.masks for p in parts]),
            traces=np.concatenate([p.traces for p in parts]),
            snr=np.concatenate([p.snr for p in parts]),
        )


def transient_snrs(traces: np.ndarray) -> np.ndarray:
    """``(99th percentile - median) / noise`` of each row of ``traces`` ``(n, L)`` (noise from
    frame differences), computed for all rows at once."""
    traces = np.asarray(traces, dtype=np.float64)
    if traces.shape[1] < 3:
        return np.zeros(traces.shape[0])
    noise = np.median(np.abs(np.diff(traces, axis=1)), axis=1) / (0.6745 * np.sqrt(2.0))
    spread = np.percentile(traces, 99, axis=1) - np.median(traces, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = spread / noise
    return np.where(noise > 0, ratio, np.where(spread > 0, np.inf, 0.0))


#: The share of its ring's mean subtracted from a candidate's fluorescence before its transient
#: SNR is measured: slow neuropil fluctuations, far above the frame-to-frame noise at high photon
#: counts, are not the cell's transients.
SNR_NEUROPIL_COEFFICIENT = 1.0

#: 4-connected within each channel's mask, never across masks (labelling a stack of masks at once)
_PLANAR_4 = np.stack([np.zeros((3, 3), bool), ndimage.generate_binary_structure(2, 1),
                      np.zeros((3, 3), bool)])


def mask_components(mask: np.ndarray, threshold: float,
                    min_area: int) -> list[tuple[int, int, int, int, np.ndarray]]:
    """The connected parts of one channel's binarized mask, each as one candidate.

    The network sometimes spends one channel on two or more separate somata (seen with the
    published mini weights whenever a patch holds several active cells); taken whole, such a
    channel is one "neuron" whose centroid lies between the cells. Each 4-connected part of
    ``mask > threshold`` with at least ``min_area`` pixels is returned as ``(y0, y1, x0, x1, on)``:
    its bounding box in patch coordinates and its boolean mask inside that box.
    """
    return [(ys.start, ys.stop, xs.start, xs.stop, on)
            for _, ys, xs, on in _components(np.asarray(mask)[None] > threshold, min_area)]


def _components(on_stack: np.ndarray, min_area: int,
                ) -> Iterator[tuple[int, slice, slice, np.ndarray]]:  # fmt: skip
    """``(plane, ys, xs, on)`` of each 4-connected part (at least ``min_area`` pixels) of each
    plane of the boolean stack ``(n, h, w)``, in plane then raster order; one labelling call."""
    labels, _ = ndimage.label(on_stack, structure=_PLANAR_4)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        plane, ys, xs = box
        on = labels[plane.start, ys, xs] == index
        if on.sum() >= max(min_area, 1):
            yield plane.start, ys, xs, on


def patch_candidates(outputs, first: int, tiles: list, pixels: np.ndarray, *,
                     block_shape: tuple[int, int], origin: tuple[int, int],
                     frame_shape: tuple[int, int], span: np.ndarray, offset: int,
                     params: DecideParams) -> Candidates:
    """Candidates from one batch of network outputs: each part :func:`mask_components` finds in
    each channel (the whole batch labelled in one call, the traces and SNRs computed together).
    A candidate's SNR is :func:`transient_snrs` of its mean raw fluorescence minus
    :data:`SNR_NEUROPIL_COEFFICIENT` times the mean of its ring in the block (the neuropil:
    its slow fluctuations are not transients).

    Parameters
    ----------
    outputs : PatchOutputs
        ``footprints`` ``(b, N, S, S)``, ``traces`` ``(b, N, L)`` of patches ``first .. first + b``.
    tiles : list of Tile
        The chunk's tiles, in patch order.
    pixels : ndarray, shape (h * w, T_model)
        The chunk's block (movie-range units) pixel by pixel (:func:`pixel_major`), for the raw
        traces.
    block_shape : (h, w)
        The block's frame size.
    origin : (y0, x0)
        Block origin on the padded frame.
    frame_shape : (H, W)
        Real frame size; masks are cropped to it.
    span : ndarray, shape (B,)
        Per-patch divisors of the whole chunk.
    offset : int
        Frames trimmed by the network at each window end.
    """
    footprints = np.asarray(outputs.footprints, dtype=np.float32)
    traces = np.asarray(outputs.traces, dtype=np.float32)
    n_patches, n_channels, size_y, size_x = footprints.shape
    length = traces.shape[-1]
    on_all = footprints > params.mask_threshold
    for b in range(n_patches):  # nothing outside the real frame
        tile = tiles[first + b]
        on_all[b, :, max(frame_shape[0] - tile.y0, 0):] = False
        on_all[b, :, :, max(frame_shape[1] - tile.x0, 0):] = False
    rows = {k: [] for k in ("tile", "channel", "bbox", "masks", "traces", "placed")}
    for plane, ys, xs, on in _components(on_all.reshape(-1, size_y, size_x), params.min_area):
        b, n = divmod(plane, n_channels)
        tile = tiles[first + b]
        rows["placed"].append((on, tile.y0 - origin[0] + ys.start, tile.x0 - origin[1] + xs.start))
        rows["tile"].append(tile.index)
        rows["channel"].append(n)
        rows["bbox"].append((tile.y0 + ys.start, tile.x0 + xs.start, ys.stop - ys.start,
                             xs.stop - xs.start))
        rows["masks"].append(np.where(on, footprints[b, n, ys, xs], 0.0).ravel())
        rows["traces"].append(traces[b, n] * span[first + b])
    if not rows["tile"]:
        return Candidates.empty(length)
    raw = corrected_traces(pixels, block_shape, rows["placed"],
                           SNR_NEUROPIL_COEFFICIENT)[:, offset:offset + length]
    sizes = [m.size for m in rows["masks"]]
    return Candidates(
        tile=np.asarray(rows["tile"], np.int32), channel=np.asarray(rows["channel"], np.int32),
        bbox=np.asarray(rows["bbox"], np.int32),
        mask_offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        masks=np.concatenate(rows["masks"]).astype(np.float32),
        traces=np.asarray(rows["traces"], np.float32),
        snr=transient_snrs(raw).astype(np.float32),
    )


#: Ring of :func:`soma_contrast`: from ``RING_GAP`` to ``RING_GAP + RING_WIDTH`` pixels out (the
#: network's grid, where somata have the model's size), as the neuropil ring of the traces.
RING_GAP, RING_WIDTH = 2, 8


def _ring(on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``on`` padded by the ring's reach, and its ring there: the pixels :data:`RING_GAP` + 1 to
    :data:`RING_GAP` + :data:`RING_WIDTH` steps away (4-connected steps, one distance transform)."""
    reach = RING_GAP + RING_WIDTH
    padded = np.pad(on, reach)
    distance = ndimage.distance_transform_cdt(~padded, metric="taxicab")
    return padded, (distance > RING_GAP) & (distance <= reach)


def pixel_major(block: np.ndarray) -> np.ndarray:
    """A block ``(T, h, w)`` as ``(h * w, T)`` float32, each pixel's time course contiguous: the
    layout :func:`corrected_traces` reads (one copy per chunk, not one gather per candidate)."""
    return np.ascontiguousarray(block.reshape(block.shape[0], -1).T, dtype=np.float32)


def corrected_traces(pixels: np.ndarray, block_shape: tuple[int, int],
                     placed: list[tuple[np.ndarray, int, int]],
                     coefficient: float) -> np.ndarray:
    """For each ``(on, y0, x0)`` of ``placed`` (a boolean mask with its top-left corner on the
    block, inside it): the mean of the block over ``on`` minus ``coefficient`` times the mean
    over its ring (:data:`RING_GAP` to :data:`RING_GAP` + :data:`RING_WIDTH` pixels out, clipped
    to the block; no ring pixel: no correction). ``(len(placed), T)`` float32.

    ``pixels`` is the block ``(T, h, w)`` as :func:`pixel_major` lays it out. Every mask's and
    ring's weights go into one sparse matrix and every trace comes from one product with the
    block (both in compiled code that releases the interpreter lock); the rings come from one
    distance transform of all masks stacked.
    """
    n = len(placed)
    height, width = block_shape
    if not n:
        return np.zeros((0, pixels.shape[1]), np.float32)
    reach = RING_GAP + RING_WIDTH
    stack = np.zeros((n, max(on.shape[0] for on, _, _ in placed) + 2 * reach,
                      max(on.shape[1] for on, _, _ in placed) + 2 * reach), bool)
    for i, (on, _, _) in enumerate(placed):
        stack[i, reach:reach + on.shape[0], reach:reach + on.shape[1]] = on
    corner_y = np.array([y0 for _, y0, _ in placed], np.int64) - reach
    corner_x = np.array([x0 for _, _, x0 in placed], np.int64) - reach

    def weighted(region: np.ndarray, scale: float) -> tuple[np.ndarray, ...]:
        """Row, block pixel and weight of each pixel of ``region`` inside the block, each mask's
        weights ``scale`` over its number of pixels there."""
        row, y, x = np.nonzero(region)
        y, x = y + corner_y[row], x + corner_x[row]
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        row, y, x = row[inside], y[inside], x[inside]
        count = np.bincount(row, minlength=n)
        return row, y * width + x, (scale / count[row]).astype(np.float32)

    parts = [weighted(stack, 1.0)]
    if coefficient:
        distance = ndimage.distance_transform_cdt(~stack, metric=_PLANAR_4)
        parts.append(weighted((distance > RING_GAP) & (distance <= reach), -coefficient))
    row, column, weight = (np.concatenate(p) for p in zip(*parts, strict=True))
    weights = sparse.csr_matrix((weight, (row, column)), shape=(n, height * width))
    return np.asarray(weights @ pixels, dtype=np.float32)


def ring_values(image: np.ndarray, on: np.ndarray, y0: int, x0: int,
                 exclude: np.ndarray | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]] | None:  # fmt: skip
    """The image's values under ``on`` (placed at ``(y0, x0)``) and in its ring (without the
    pixels of ``exclude``, an image-sized mask, unless that leaves none), and the slices of ``on``
    inside the image; ``None`` when either has no pixel in the image."""
    reach = RING_GAP + RING_WIDTH
    h, w = image.shape
    ys0, xs0 = y0 - reach, x0 - reach
    padded, ring = _ring(on)
    ya, yb = max(ys0, 0), min(ys0 + padded.shape[0], h)
    xa, xb = max(xs0, 0), min(xs0 + padded.shape[1], w)
    if ya >= yb or xa >= xb:
        return None
    local = (slice(ya - ys0, yb - ys0), slice(xa - xs0, xb - xs0))
    values = image[ya:yb, xa:xb]
    ring = ring[local]
    if exclude is not None and (ring & ~exclude[ya:yb, xa:xb]).any():
        ring = ring & ~exclude[ya:yb, xa:xb]
    inside, around = values[padded[local]], values[ring]
    if not inside.size or not around.size:
        return None
    inner = (slice(max(y0, 0) - y0, min(y0 + on.shape[0], h) - y0),
             slice(max(x0, 0) - x0, min(x0 + on.shape[1], w) - x0))
    return inside, around, inner


def soma_contrast(image: np.ndarray, on: np.ndarray, y0: int, x0: int,
                  exclude: np.ndarray | None = None) -> float:
    """``(mean of image over on - p90 of the ring) / |p90|``; ``on`` is a boolean footprint placed
    at ``(y0, x0)`` on ``image`` (may reach past its edges).

    The 90th percentile, not the ring's mean, is the reference: a strip of neuropil beside a dark
    vessel is brighter than the ring's mean (half of the ring is vessel) but not than its bright
    half. The ring is not cut by other neurons (false detections along one vessel edge would
    otherwise remove each other's pixels from their rings). ``nan`` when the footprint or the
    ring has no pixel inside the image. ``exclude`` (an image-sized mask) leaves pixels out of
    the ring, as :func:`ring_values` does.
    """
    found = ring_values(image, on, y0, x0, exclude)
    if found is None:
        return float("nan")
    inside, around, _ = found
    reference = float(np.percentile(around, 90))
    difference = float(inside.mean()) - reference
    return difference / abs(reference) if reference else math.copysign(math.inf, difference)


def required_windows(total_windows: int, params: DecideParams) -> int:
    """Windows a neuron must be seen in, out of the movie's ``total_windows``
    (``min_window_fraction`` of them, rounded up, at least one)."""
    share = math.ceil(params.min_window_fraction * total_windows - 1e-9)
    return max(1, share)


#: :func:`keep_neuron`'s reason when only the soma-contrast rule failed.
TOO_DIM = "not brighter than its surroundings"


def too_dim(contrast: float, params: DecideParams) -> bool:
    """The soma-contrast rule: under ``min_contrast`` (``nan``, unknown contrast, passes)."""
    return params.min_contrast is not None and contrast < params.min_contrast


def keep_neuron(*, area: int, n_windows: int, params: DecideParams, total_windows: int = 1,
                contrast: float = math.inf) -> tuple[bool, str]:
    """The neuron-level rule; returns ``(keep, reason)`` (reason names the first failed test).

    ``contrast``: :func:`soma_contrast` in the mean image (``nan``, unknown, passes)."""
    if area < params.min_area:
        return False, "area below min_area"
    if n_windows < required_windows(total_windows, params):
        return False, "seen in too small a share of the windows"
    if too_dim(contrast, params):
        return False, TOO_DIM
    return True, "kept"
