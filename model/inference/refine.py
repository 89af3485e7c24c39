"""Footprints cut to the soma the mean image shows, after the neuron rule.

The network's footprints often reach into the neuropil around a cell or span two or three touching
cells (one channel on both, and tiles that each saw a different pair chained by the stitch); both
cost matches (IoU < 0.5) and blur the traces. :func:`refine_neurons` first cuts each kept neuron's
footprint between the somata its shape holds (:func:`split_touching`: the network outlines the
union of touching cells well, the mean image less so), then cuts each piece that is too large for
one soma (``refine_above`` times the movie's typical neuron) to the bright part of the mean image
inside it (:func:`refine_footprint`), makes each separate part a neuron of its own, drops split
pieces that fail the soma-contrast rule on their own (:func:`piece_contrasts`), grows footprints
far smaller than the movie's typical neuron to the soma around them (:func:`grow_small`: the
network often outlines only the core of a dim cell), and keeps one of two footprints that end up
on the same soma.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from model.inference.decide import RING_GAP, ring_values, soma_contrast, too_dim
from model.inference.params import DecideParams
from model.inference.stitch import Footprint, KeptNeuron, Neuron, centroid

#: Percentile of the ring taken as the background by :func:`refine_footprint`.
REFINE_PERCENTILE = 90
#: Percentile of the footprint taken as its peak by :func:`refine_footprint`.
PEAK_PERCENTILE = 95
#: Fewest neurons whose median area stands for the movie's typical soma (:func:`grow_small`,
#: and which footprints :func:`refine_neurons` cuts).
GROW_MIN_NEURONS = 5
#: A grown footprint stays within this many typical radii of its centre, and under this many
#: typical areas (:func:`grow_footprint`): it may fill its soma, not reach into the next one.
GROW_REACH, GROW_MAX_AREA = 1.6, 1.6


def refine_footprint(image: np.ndarray, on: np.ndarray, y0: int, x0: int, *, level: float,
                     min_area: int, exclude: np.ndarray | None = None,
                     ) -> list[tuple[np.ndarray, int, int]]:  # fmt: skip
    """The soma(s) inside one network footprint, from the mean image.

    Inside ``on`` (boolean, at ``(y0, x0)``), the soma is where the mean image is brighter than
    ``reference + level * (peak - reference)``, with ``reference`` the 90th percentile of the ring
    of :func:`~model.inference.decide.soma_contrast` (without the pixels of ``exclude``, the other
    neurons, which are bright) and ``peak`` the footprint's 95th percentile. Each 4-connected part
    of at least ``min_area`` pixels is returned as ``(mask, y0, x0)`` (its bounding box). A
    footprint that is not brighter than its ring (a cell dim at rest, seen by its activity) or
    that leaves no such part comes back unchanged.
    """
    unchanged = [(on, y0, x0)]
    found = ring_values(image, on, y0, x0, exclude)
    if found is None:
        return unchanged
    inside, around, inner = found
    reference = float(np.percentile(around, REFINE_PERCENTILE))
    peak = float(np.percentile(inside, PEAK_PERCENTILE))
    if peak <= reference:
        return unchanged
    local = np.zeros_like(on)
    ya, xa = y0 + inner[0].start, x0 + inner[1].start
    window = image[ya:ya + inner[0].stop - inner[0].start, xa:xa + inner[1].stop - inner[1].start]
    local[inner] = on[inner] & (window > reference + level * (peak - reference))
    labels, _ = ndimage.label(local)
    parts = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        part = labels[box] == index
        if part.sum() >= max(min_area, 1):
            parts.append((part, y0 + box[0].start, x0 + box[1].start))
    return parts or unchanged


def split_touching(part: np.ndarray, y0: int, x0: int, *, distance: float, min_area: int,
                   ) -> list[tuple[np.ndarray, int, int]]:  # fmt: skip
    """``part`` cut between the centres of the somata it holds (a watershed of its distance map
    from markers at least ``distance`` pixels apart and ``distance / 2`` deep); one piece, or a
    piece under ``min_area`` pixels, leaves it whole."""
    depth = ndimage.distance_transform_edt(np.pad(part, 1))[1:-1, 1:-1]
    peaks = peak_local_max(depth, min_distance=max(int(distance), 1), threshold_abs=distance / 2,
                           labels=part.astype(np.int32), exclude_border=False)
    if len(peaks) < 2:
        return [(part, y0, x0)]
    markers = np.zeros(part.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-depth, markers, mask=part)
    pieces = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        piece = labels[box] == index
        if piece.sum() < max(min_area, 1):
            return [(part, y0, x0)]
        pieces.append((piece, y0 + box[0].start, x0 + box[1].start))
    return pieces


def refine_neurons(passed: list[tuple[Neuron, np.ndarray, float]], mean_image: np.ndarray | None,
                   params: DecideParams, reasons: Counter) -> list[KeptNeuron]:  # fmt: skip
    """Records of the neurons that passed the rule, ``(neuron, on, contrast)`` each, with their
    footprints split when ``params.split_distance`` is set and refined when
    ``params.refine_level`` is set and a mean image is given. Counts the splits, drops and
    repeats in ``reasons``."""
    refine = mean_image is not None and params.refine_level is not None
    others = occupied_mask(mean_image.shape, passed) if refine else None
    areas = [int(on.sum()) for _, on, _ in passed]
    # only footprints too large for one soma are cut (none when the typical size is unknown)
    largest = (params.refine_above * float(np.median(areas)) if len(areas) >= GROW_MIN_NEURONS
               else np.inf)
    kept = []
    for neuron, on, contrast in passed:
        fp = neuron.footprint
        parts = [(on, fp.y0, fp.x0)]
        if params.split_distance is not None:
            parts = split_touching(on, fp.y0, fp.x0, distance=params.split_distance,
                                   min_area=params.min_area)
        if refine:
            parts = [cut for part in parts
                     for cut in (refine_footprint(mean_image, *part, level=params.refine_level,
                                                  min_area=params.min_area, exclude=others)
                                 if part[0].sum() > largest else [part])]
        contrasts = [contrast] * len(parts)
        if len(parts) > 1 and mean_image is not None:
            contrasts = piece_contrasts(mean_image, parts)
            bright = [i for i, c in enumerate(contrasts) if not too_dim(c, params)]
            if not bright:
                reasons["kept"] -= 1
            reasons["split piece not brighter than its surroundings"] += len(parts) - len(bright)
            parts, contrasts = [parts[i] for i in bright], [contrasts[i] for i in bright]
        if len(parts) > 1:
            reasons["split into separate somata"] += len(parts) - 1
        for (part, y0, x0), part_contrast in zip(parts, contrasts, strict=True):
            values = fp.values[y0 - fp.y0:y0 - fp.y0 + part.shape[0],
                               x0 - fp.x0:x0 - fp.x0 + part.shape[1]]
            refined = Footprint(y0, x0, np.where(part, values, 0).astype(np.float32))
            kept.append(KeptNeuron(footprint=refined,
                                   centroid=centroid(refined, params.mask_threshold),
                                   area=int(part.sum()), contrast=part_contrast, neuron=neuron))
    if refine and params.grow_below is not None:
        kept = grow_small(kept, mean_image, params, reasons)
    return drop_repeats(kept, reasons)


def grow_small(kept: list[KeptNeuron], image: np.ndarray, params: DecideParams,
               reasons: Counter) -> list[KeptNeuron]:  # fmt: skip
    """Grow each footprint under ``params.grow_below`` x the median area of ``kept`` to the soma
    the mean image shows around it (:func:`grow_footprint`).

    The network often outlines only the bright core of a dim cell (a third to a half of it, IoU
    < 0.5: a false detection and a miss at once), or two small pieces of one cell. Other
    neurons' pixels are left out of a growing footprint, except those of the other small ones:
    two pieces of one cell both grow to it, and :func:`drop_repeats` keeps one.
    """
    if len(kept) < GROW_MIN_NEURONS:
        return kept
    areas = np.array([rec.area for rec in kept])
    typical = float(np.median(areas))
    small = areas < params.grow_below * typical
    occupied = np.zeros(image.shape, bool)
    for rec in (rec for rec, is_small in zip(kept, small, strict=True) if not is_small):
        paint(occupied, rec.footprint.values > 0, rec.footprint.y0, rec.footprint.x0)
    radius = float(np.sqrt(typical / np.pi))
    max_area = int(GROW_MAX_AREA * typical)
    for rec in (rec for rec, is_small in zip(kept, small, strict=True) if is_small):
        fp = rec.footprint
        on = fp.values > 0
        grown = grow_footprint(image, on, fp.y0, fp.x0, radius=radius,
                               occupied=occupied, level=params.grow_level, max_area=max_area)
        if grown is None:
            continue
        part, y0, x0 = grown
        values = np.zeros(part.shape, np.float32)
        values[part] = float(np.median(fp.values[on]))
        paint_values(values, fp.values, fp.y0 - y0, fp.x0 - x0)
        rec.footprint = Footprint(y0, x0, values)
        rec.area = int(part.sum())
        rec.centroid = centroid(rec.footprint, params.mask_threshold)
        reasons["grown to its soma"] += 1
    return kept


def grow_footprint(image: np.ndarray, on: np.ndarray, y0: int, x0: int, *, radius: float,
                   occupied: np.ndarray, level: float, max_area: int,
                   ) -> tuple[np.ndarray, int, int] | None:  # fmt: skip
    """The soma around a small footprint ``on`` (boolean, at ``(y0, x0)``), from the mean image.

    The pixels brighter than ``ring + level x (peak - ring)`` (``ring``: the median of the pixels
    2 to 1.5 ``radius`` out, other neurons' ``occupied`` pixels left out; ``peak``: the
    footprint's 90th percentile), within ``GROW_REACH x radius`` of its centre and not
    ``occupied``, connected to it, opened, holes filled: ``(mask, y0, x0)``. ``None`` when the
    footprint is not brighter than its ring, or the soma is no larger than the footprint or
    larger than ``max_area``.
    """
    if not on.any():
        return None
    cy, cx = (float(c) for c in ndimage.center_of_mass(on))
    cy, cx = cy + y0, cx + x0
    reach = int(np.ceil(2.5 * radius))
    wy0, wx0 = max(int(cy) - reach, 0), max(int(cx) - reach, 0)
    wy1 = min(int(cy) + reach + 1, image.shape[0])
    wx1 = min(int(cx) + reach + 1, image.shape[1])
    window = image[wy0:wy1, wx0:wx1]
    own = paint(np.zeros(window.shape, bool), on, y0 - wy0, x0 - wx0)
    others = occupied[wy0:wy1, wx0:wx1] & ~own
    distance = ndimage.distance_transform_edt(~own)
    ring = (distance >= RING_GAP) & (distance <= 1.5 * radius) & ~others
    if not own.any() or ring.sum() < 10:  # own: nothing of it inside the image
        return None
    reference = float(np.median(window[ring]))
    peak = float(np.percentile(window[own], 90))
    if peak <= reference:
        return None
    yy, xx = np.ogrid[wy0:wy1, wx0:wx1]
    near = (yy - cy) ** 2 + (xx - cx) ** 2 <= (GROW_REACH * radius) ** 2
    bright = ((window > reference + level * (peak - reference)) & near & ~others) | own
    labels, _ = ndimage.label(bright)
    touching = np.unique(labels[own])
    region = np.isin(labels, touching[touching > 0])
    region = ndimage.binary_fill_holes(ndimage.binary_opening(region) | own)
    area = int(region.sum())
    if area <= int(own.sum()) or area > max_area:
        return None
    box = ndimage.find_objects(region.astype(np.int32))[0]
    return region[box], wy0 + box[0].start, wx0 + box[1].start


def paint_values(canvas: np.ndarray, values: np.ndarray, y0: int, x0: int) -> np.ndarray:
    """Copy the non-zero ``values``, placed at ``(y0, x0)`` of ``canvas``, onto it (clipped)."""
    boxes = _overlap(canvas.shape, values.shape, y0, x0)
    if boxes is not None:
        source, target = values[boxes[1]], canvas[boxes[0]]
        target[source > 0] = source[source > 0]
    return canvas


def piece_contrasts(image: np.ndarray, parts: list[tuple[np.ndarray, int, int]]) -> list[float]:
    """Soma contrast of each piece of one footprint, its siblings left out of its ring.

    A soma beside its sibling would otherwise be measured against the sibling's bright pixels;
    a strip of neuropil along a vessel, cut into pieces, is measured against the neuropil on its
    far side, which it does not outshine.
    """
    placed = [paint(np.zeros(image.shape, bool), *part) for part in parts]
    union = np.logical_or.reduce(placed)
    return [soma_contrast(image, part, y0, x0, exclude=union & ~own)
            for (part, y0, x0), own in zip(parts, placed, strict=True)]


def paint(canvas: np.ndarray, on: np.ndarray, y0: int, x0: int) -> np.ndarray:
    """Set ``canvas`` where the boolean ``on``, placed at ``(y0, x0)``, is true (clipped to the
    canvas); returns ``canvas``."""
    boxes = _overlap(canvas.shape, on.shape, y0, x0)
    if boxes is not None:
        canvas[boxes[0]] |= on[boxes[1]]
    return canvas


def _overlap(canvas: tuple[int, ...], shape: tuple[int, ...], y0: int, x0: int,
             ) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:  # fmt: skip
    """The boxes of ``canvas`` and of an array of ``shape`` placed at ``(y0, x0)`` on it that
    overlap (``None`` when nothing does)."""
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + shape[0], canvas[0]), min(x0 + shape[1], canvas[1])
    if ya >= yb or xa >= xb:
        return None
    return (slice(ya, yb), slice(xa, xb)), (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))


def occupied_mask(shape: tuple[int, int], passed: list[tuple[Neuron, np.ndarray, float]],
                  ) -> np.ndarray:  # fmt: skip
    """Pixels of every neuron that passed the rule, grown by the ring's gap."""
    occupied = np.zeros(shape, bool)
    for neuron, on, _ in passed:
        paint(occupied, on, neuron.footprint.y0, neuron.footprint.x0)
    return ndimage.binary_dilation(occupied, iterations=RING_GAP) if passed else occupied


def drop_repeats(kept: list[KeptNeuron], reasons: Counter,
                 iou: float = 0.5) -> list[KeptNeuron]:  # fmt: skip
    """Keep one of footprints that cover the same soma (IoU > ``iou``): two network neurons cut
    down to one cell would otherwise count it twice. The larger footprint stays."""
    order = sorted(range(len(kept)), key=lambda i: -kept[i].area)
    out: list[KeptNeuron] = []
    for i in order:
        rec = kept[i]
        if any(_iou(rec, other) > iou for other in out):
            reasons["kept"] -= 1
            reasons["same soma as another neuron"] += 1
            continue
        out.append(rec)
    return out


def _iou(a: KeptNeuron, b: KeptNeuron) -> float:
    """IoU of two records' footprints (each a box at ``y0, x0``)."""
    fa, fb = a.footprint, b.footprint
    y0, x0 = max(fa.y0, fb.y0), max(fa.x0, fb.x0)
    y1, x1 = min(fa.box[2], fb.box[2]), min(fa.box[3], fb.box[3])
    if y0 >= y1 or x0 >= x1:
        return 0.0
    pa = fa.values[y0 - fa.y0:y1 - fa.y0, x0 - fa.x0:x1 - fa.x0] > 0
    pb = fb.values[y0 - fb.y0:y1 - fb.y0, x0 - fb.x0:x1 - fb.x0] > 0
    inter = int((pa & pb).sum())
    return inter / (a.area + b.area - inter) if inter else 0.0
