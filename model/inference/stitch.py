"""Stitch candidates into neurons: merge across tiles, link across windows, assemble full traces.

Rules (thresholds in :class:`~model.inference.params.StitchParams`):

1. *Tiles, same window.* Two candidates from different tiles are the same neuron when their
   binarized footprints, compared inside the part of the frame both tiles see, have IoU >=
   ``merge_iou`` (a neuron cut by a tile border is compared with the part of the same neuron the
   neighbouring tile sees there). Merging is transitive (union-find). Two channels of one patch
   are never merged: the network separates neighbours itself, and the few times it spends two
   channels on one soma the footprints coincide and ``refine.drop_repeats`` keeps one. The
   merged footprint is the mean of the members' masks over the members that detected each
   pixel, and the window's trace the mean of the members' traces, both over the members that no
   interior tile border cut when there is one (a cell seen in part is placed a few pixels inward
   by the network). A group seen by one tile only and cut by its border is a fragment and is
   dropped (``drop_fragments``).
2. *Windows.* Window neurons are linked to the neurons found so far, in window order, by footprint
   IoU >= ``link_iou``, best pairs first, one to one; an unmatched window neuron starts a new
   neuron.
3. *Duplicates.* Neurons whose footprints overlap by IoU >= ``link_iou`` but were never seen in the
   same window are one neuron seen twice, and are merged.
4. *Traces.* Each window covers real frames ``[start, start + L)``; in an overlap the windows'
   traces are blended with linear ramps (:func:`~model.inference.plan.window_weights`). A window in
   which the neuron was not detected contributes zero (the network reports no activity there), so a
   trace always has exactly ``T`` frames and no frame is counted twice; frames no window covers
   (the first and last ``trace_offset`` frames of a movie at least one window long) take the
   value of the nearest covered frame.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from model.inference.decide import Candidates
from model.inference.params import DecideParams, StitchParams
from model.inference.plan import Plan, window_weights


@dataclass
class Footprint:
    """A float mask on a bounding box of the frame: ``values`` ``(h, w)`` at ``(y0, x0)``."""

    y0: int
    x0: int
    values: np.ndarray

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.y0, self.x0, self.y0 + self.values.shape[0], self.x0 + self.values.shape[1]


def _accumulate(total: Footprint | None, count: Footprint | None, fp: Footprint,
                weight: np.ndarray) -> tuple[Footprint, Footprint]:
    """Add ``fp`` (and ``weight``, same shape) into running sums, growing the box as needed."""
    if total is None:
        return Footprint(fp.y0, fp.x0, fp.values.astype(np.float32)), Footprint(
            fp.y0, fp.x0, weight.astype(np.float32))
    ty0, tx0, ty1, tx1 = total.box
    fy0, fx0, fy1, fx1 = fp.box
    y0, x0, y1, x1 = min(ty0, fy0), min(tx0, fx0), max(ty1, fy1), max(tx1, fx1)
    new_t = np.zeros((y1 - y0, x1 - x0), np.float32)
    new_c = np.zeros_like(new_t)
    new_t[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0] = total.values
    new_c[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0] = count.values
    new_t[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] += fp.values
    new_c[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] += weight
    return Footprint(y0, x0, new_t), Footprint(y0, x0, new_c)


def _mean(total: Footprint, count: Footprint) -> Footprint:
    values = np.divide(total.values, count.values, out=np.zeros_like(total.values),
                       where=count.values > 0)
    return Footprint(total.y0, total.x0, values)


def centroid(fp: Footprint, threshold: float) -> tuple[float, float]:
    """``(y, x)`` centre of the binarized footprint in frame coordinates."""
    return _centroid_of(mask_pixels(fp, threshold), fp)


def _centroid_of(pixels: tuple[np.ndarray, np.ndarray], fp: Footprint) -> tuple[float, float]:
    """:func:`centroid` of ``fp`` from its :func:`mask_pixels` (the mean of the rows and of the
    columns within the box, then moved to the frame)."""
    ys, xs = pixels
    if ys.size == 0:
        return float(fp.y0), float(fp.x0)
    return float((ys - fp.y0).mean() + fp.y0), float((xs - fp.x0).mean() + fp.x0)


@dataclass
class WindowNeuron:
    """One neuron within one window, merged over tiles."""

    footprint: Footprint
    trace: np.ndarray
    tiles: frozenset[int]
    snr: float


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return [out[k] for k in sorted(out)]


def boxes_overlap(boxes: np.ndarray) -> list[tuple[int, int]]:
    """Index pairs ``i < j`` whose ``(y0, x0, h, w)`` boxes intersect, in ascending order.

    A sweep over the boxes sorted by their top row: only boxes that start above another's
    bottom row are compared with it, so the work grows with the boxes in one band of rows,
    not with the square of all boxes. A large field stitches thousands of neurons: 16000
    random 5-20 px boxes on 512 x 512 compared all against all took 2.2 s and tables of 256 MB
    each; the sweep 0.4 s.
    """
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    y0, x0 = boxes[:, 0], boxes[:, 1]
    y1, x1 = y0 + boxes[:, 2], x0 + boxes[:, 3]
    order = np.argsort(y0, kind="stable")
    stop = np.searchsorted(y0[order], y1[order], side="left")  # first box starting below
    first = np.arange(len(order)) + 1
    counts = np.maximum(stop - first, 0)
    a = np.repeat(np.arange(len(order)), counts)  # pairs of positions in the sorted order
    b = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + a + 1
    i, j = order[a], order[b]
    hit = (y0[i] < y1[j]) & (y0[j] < y1[i]) & (x0[i] < x1[j]) & (x0[j] < x1[i])
    i, j = i[hit], j[hit]
    i, j = np.minimum(i, j), np.maximum(i, j)
    pairs = np.lexsort((j, i))
    return list(zip(i[pairs].tolist(), j[pairs].tolist(), strict=True))


def mask_ious(a: list[tuple[np.ndarray, np.ndarray]], b: list[tuple[np.ndarray, np.ndarray]],
              i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """IoU of binarized footprints ``a[i[k]]`` and ``b[j[k]]`` for every ``k``, each footprint
    given as the frame rows and columns of its pixels: shared pixels over the pixels of
    either (0 where either is empty or nothing is shared).

    Every shared pixel of every pair comes from one sparse product (pixels x footprints), not
    from one comparison of two boxes in Python per pair: a window's neurons are compared with
    every neuron found so far, thousands after a few windows.
    """
    from scipy import sparse

    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    if not i.size:
        return np.zeros(0, np.float64)
    rows = [np.concatenate([p[0] for p in fps] or [np.zeros(0, np.int64)]) for fps in (a, b)]
    cols = [np.concatenate([p[1] for p in fps] or [np.zeros(0, np.int64)]) for fps in (a, b)]
    y0 = min((r.min() for r in rows if r.size), default=0)
    x0 = min((c.min() for c in cols if c.size), default=0)
    width = max((c.max() for c in cols if c.size), default=0) - x0 + 1
    height = max((r.max() for r in rows if r.size), default=0) - y0 + 1
    sizes = [np.array([p[0].size for p in fps], np.int64) for fps in (a, b)]
    stacked = [sparse.csr_matrix(
        (np.ones(r.size, np.int32), (r - y0) * width + (c - x0),
         np.concatenate([[0], np.cumsum(n)])), shape=(len(n), height * width))
        for r, c, n in zip(rows, cols, sizes, strict=True)]
    shared = (stacked[0] @ stacked[1].T).tocoo()
    keys = shared.row.astype(np.int64) * len(b) + shared.col
    order = np.argsort(keys)
    keys, counts = keys[order], shared.data[order].astype(np.int64)
    wanted = i * len(b) + j
    inter = np.zeros(i.size, np.int64)
    if keys.size:
        at = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
        shares = keys[at] == wanted
        inter[shares] = counts[at[shares]]
    union = sizes[0][i] + sizes[1][j] - inter
    return np.where(inter > 0, inter / np.maximum(union, 1), 0.0)


def region_overlaps(pixels: tuple[np.ndarray, np.ndarray, np.ndarray], i: np.ndarray,
                    j: np.ndarray, regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and containment (``|a & b| / min(|a|, |b|)``) of binarized footprints ``i[k]`` and
    ``j[k]``, both cut to ``regions[k]`` ``(y0, x0, y1, x1)`` (the part of the frame two tiles
    both see, so a footprint cut by one tile's border is compared with the part of the other
    that the first tile could see), for every ``k``; 0 where either cut footprint is empty.
    All pairs of one window at once (the pixels of each pair gathered, cut and matched by a
    sort, not two boxes compared in Python per pair).

    ``pixels``: ``(rows, cols, sizes)``, the frame rows and columns of every footprint's pixels,
    footprint after footprint, and how many each has (:func:`candidate_pixels`).
    """
    ys, xs, sizes = (np.asarray(a, np.int64) for a in pixels)
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    n_pairs = i.size
    if not n_pairs:
        return np.zeros(0, np.float64), np.zeros(0, np.float64)
    starts = np.cumsum(sizes) - sizes
    y_lo, x_lo = (int(ys.min()), int(xs.min())) if ys.size else (0, 0)
    height = int(ys.max()) - y_lo + 1 if ys.size else 1
    width = int(xs.max()) - x_lo + 1 if xs.size else 1
    regions = np.asarray(regions, np.int64).reshape(-1, 4)

    def cut(which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per pair, the pixels of footprint ``which[k]`` inside region ``k``: their pair and
        a key unique to (pair, pixel)."""
        n = sizes[which]
        pair = np.repeat(np.arange(n_pairs), n)
        at = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n - starts[which], n)
        y, x, r = ys[at], xs[at], regions[pair]
        inside = (y >= r[:, 0]) & (y < r[:, 2]) & (x >= r[:, 1]) & (x < r[:, 3])
        pair = pair[inside]
        return pair, (pair * height + (y[inside] - y_lo)) * width + (x[inside] - x_lo)

    pair_a, keys_a = cut(i)
    pair_b, keys_b = cut(j)
    na = np.bincount(pair_a, minlength=n_pairs)
    nb = np.bincount(pair_b, minlength=n_pairs)
    shared = np.intersect1d(keys_a, keys_b, assume_unique=True) // (height * width)
    inter = np.bincount(shared, minlength=n_pairs)
    valid = (na > 0) & (nb > 0)
    iou = np.zeros(n_pairs, np.float64)
    contained = np.zeros(n_pairs, np.float64)
    iou[valid] = inter[valid] / (na[valid] + nb[valid] - inter[valid])
    contained[valid] = inter[valid] / np.minimum(na[valid], nb[valid])
    return iou, contained


def candidate_pixels(cands: Candidates,
                     threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame rows and columns of every candidate's mask pixels above ``threshold`` (candidate
    after candidate, each row-major as :func:`mask_pixels` lists them) and the count of each,
    from the flat masks at once."""
    on = np.nonzero(cands.masks > threshold)[0]
    owner = np.searchsorted(cands.mask_offsets, on, side="right") - 1
    local = on - cands.mask_offsets[owner]
    bbox = cands.bbox.astype(np.int64)
    width = bbox[owner, 3]
    return (local // width + bbox[owner, 0], local % width + bbox[owner, 1],
            np.bincount(owner, minlength=len(cands)))


def mask_pixels(fp: Footprint, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame rows and columns of the pixels of ``fp`` above ``threshold``."""
    ys, xs = np.nonzero(fp.values > threshold)
    return ys.astype(np.int64) + fp.y0, xs.astype(np.int64) + fp.x0


#: A tile covers a neuron (for its recorded ``tile_evidence``) when the neuron's centroid lies this
#: many pixels inside it.
EDGE_MARGIN = 4

#: A candidate whose mask reaches this many pixels from a tile side that is not a frame edge was
#: cut by the tile border (or pulled inward by the network, which does that to cells it sees
#: only in part); see :func:`cut_by_tile`.
CUT_BAND = 2


def tile_boxes(plan: Plan) -> np.ndarray:
    """``(n_tiles, 4)`` int64: ``(y0, x0, y1, x1)`` of each tile, clipped to the real frame."""
    _, height, width = plan.movie_shape
    size = plan.patch[1]
    return np.array([(t.y0, t.x0, min(t.y0 + size, height), min(t.x0 + size, width))
                     for t in plan.tiles], dtype=np.int64).reshape(-1, 4)


def cut_by_tile(bbox: np.ndarray, box: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
    """Whether masks with ``bbox`` ``(n, 4)`` ``(y0, x0, h, w)`` reach a border of their tile
    ``box`` ``(n, 4)`` ``(y0, x0, y1, x1)`` (within :data:`CUT_BAND` pixels) that is not an edge
    of the frame: ``(n,)`` bool."""
    bbox, box = np.asarray(bbox, np.int64), np.asarray(box, np.int64)
    y0, x0, h, w = (bbox[..., k] for k in range(4))
    ty0, tx0, ty1, tx1 = (box[..., k] for k in range(4))
    return (((ty0 > 0) & (y0 < ty0 + CUT_BAND)) | ((tx0 > 0) & (x0 < tx0 + CUT_BAND))
            | ((ty1 < frame[0]) & (y0 + h > ty1 - CUT_BAND))
            | ((tx1 < frame[1]) & (x0 + w > tx1 - CUT_BAND)))


_FAR = 1 << 40
"""Bounds of a region that cuts nothing (candidates of one tile are compared whole)."""


def merge_tiles(cands: Candidates, *, decide: DecideParams, stitch: StitchParams,
                plan: Plan | None = None) -> list[WindowNeuron]:
    """Merge one window's candidates from overlapping tiles into window neurons (rule 1).

    With the ``plan``, candidates of two tiles are compared only inside the part of the frame both
    tiles see, and a neuron's footprint and trace come from the candidates that no interior tile
    border cut (:func:`cut_by_tile`) whenever there is one: the network places cells it sees only
    in part a few pixels inward, and averaging such a view with a whole one moves the footprint.
    """
    boxes = tile_boxes(plan) if plan is not None else None
    cut = np.zeros(len(cands), bool)
    if plan is not None:
        frame = plan.movie_shape[1:]
        cut = cut_by_tile(cands.bbox, boxes[cands.tile], frame)
    uf = _UnionFind(len(cands))
    pairs = np.array(boxes_overlap(cands.bbox), np.int64).reshape(-1, 2)
    i, j = pairs[:, 0], pairs[:, 1]
    same_tile = cands.tile[i] == cands.tile[j]
    # two tiles' candidates are compared inside the part of the frame both tiles see
    regions = np.tile(np.array([[-_FAR, -_FAR, _FAR, _FAR]], np.int64), (len(pairs), 1))
    if boxes is not None:
        box_i, box_j = boxes[cands.tile[i]], boxes[cands.tile[j]]
        both = np.concatenate([np.maximum(box_i[:, :2], box_j[:, :2]),
                               np.minimum(box_i[:, 2:], box_j[:, 2:])], axis=1)
        regions[~same_tile] = both[~same_tile]
    iou, _ = region_overlaps(candidate_pixels(cands, decide.mask_threshold), i, j, regions)
    same = ~same_tile & (iou >= stitch.merge_iou)
    for first, second in pairs[same].tolist():
        uf.union(first, second)
    neurons = []
    for members in uf.groups():
        whole = [m for m in members if not cut[m]]
        if not whole and stitch.drop_fragments and len({int(cands.tile[m]) for m in members}) == 1:
            continue  # a cell's edge in one tile, not confirmed by its neighbour
        whole = whole or members
        total = count = None
        for m in whole:
            fp = Footprint(int(cands.bbox[m, 0]), int(cands.bbox[m, 1]), cands.mask(m))
            total, count = _accumulate(total, count, fp, (fp.values > 0).astype(np.float32))
        neurons.append(WindowNeuron(
            footprint=_mean(total, count), trace=cands.traces[whole].mean(axis=0),
            tiles=frozenset(int(cands.tile[m]) for m in members),
            snr=float(cands.snr[members].max()),
        ))
    return neurons


@dataclass
class Neuron:
    """A neuron followed across windows."""

    total: Footprint
    count: Footprint
    segments: dict[int, np.ndarray] = field(default_factory=dict)
    detected: int = 0
    covering: int = 0
    snr: float = 0.0
    _mean_of: tuple[Footprint, Footprint, Footprint] | None = field(
        default=None, init=False, repr=False, compare=False)
    _pixels_of: tuple[Footprint, float, tuple[np.ndarray, np.ndarray]] | None = field(
        default=None, init=False, repr=False, compare=False)

    @property
    def footprint(self) -> Footprint:
        """The mean footprint, computed again only after ``total`` or ``count`` were replaced
        (every window compares each neuron found so far with its own neurons)."""
        cached = self._mean_of
        if cached is None or cached[0] is not self.total or cached[1] is not self.count:
            cached = self._mean_of = (self.total, self.count, _mean(self.total, self.count))
        return cached[2]

    def pixels(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """:func:`mask_pixels` of :attr:`footprint`, kept until the footprint changes."""
        footprint, cached = self.footprint, self._pixels_of
        if cached is None or cached[0] is not footprint or cached[1] != threshold:
            cached = self._pixels_of = (footprint, threshold, mask_pixels(footprint, threshold))
        return cached[2]

    @property
    def first_window(self) -> int:
        return min(self.segments)

    def add(self, window: int, wn: WindowNeuron, covering: frozenset[int]) -> None:
        weight = np.ones_like(wn.footprint.values)
        self.total, self.count = _accumulate(self.total, self.count, wn.footprint, weight)
        self.segments[window] = wn.trace
        self.detected += len(wn.tiles & covering)
        self.covering += len(covering)
        self.snr = max(self.snr, wn.snr)

    @property
    def tile_evidence(self) -> float:
        return self.detected / self.covering if self.covering else 1.0


#: ``KeptNeuron.found_by``: the network found it (:mod:`.stitch`), or the mean image did
#: (:mod:`.anatomy`: a soma darker than the neuropil around it).
BY_NETWORK, BY_MEAN_IMAGE = 1, 2


@dataclass
class KeptNeuron:
    """A neuron of the result: its footprint (on the network's grid until finalize brings it to
    the movie's), what found it, and what was measured of it.

    ``neuron`` is the stitched network neuron whose windows give the network's trace (``None``
    for a soma found in the mean image alone, which has no network trace).
    """

    footprint: Footprint
    centroid: tuple[float, float]
    area: int
    contrast: float
    neuron: Neuron | None = None
    found_by: int = BY_NETWORK

    @property
    def first_window(self) -> int:
        """The first window the network saw it in (-1: not found by the network)."""
        return self.neuron.first_window if self.neuron is not None else -1

    @property
    def order(self) -> tuple[int, int, tuple[float, float]]:
        """Sort key of the result's neurons: the network's first, by first window, then by
        centroid."""
        return self.found_by, self.first_window, self.centroid


def _tile_arrays(plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([t.y0 for t in plan.tiles], np.int64),
            np.array([t.x0 for t in plan.tiles], np.int64))


def covering_tiles(plan: Plan, point: tuple[float, float], margin: int,
                   origins: tuple[np.ndarray, np.ndarray] | None = None) -> frozenset[int]:
    """Tiles holding ``point`` at least ``margin`` pixels inside each side that is no frame edge.

    When ``2 * margin`` exceeds the tile overlap, points between the margins of two neighbouring
    tiles are that far inside none of them; those are covered by every tile that holds them
    (otherwise a neuron there had no covering tile and passed the tile-evidence rule unexamined).
    """
    return covering_tiles_of(plan, np.array([point], np.float64), margin, origins)[0]


def covering_tiles_of(plan: Plan, points: np.ndarray, margin: int,
                      origins: tuple[np.ndarray, np.ndarray] | None = None,
                      ) -> list[frozenset[int]]:  # fmt: skip
    """:func:`covering_tiles` of every point ``(n, 2)`` at once (one window's neurons)."""
    _, height, width = plan.movie_shape
    size = plan.patch[1]
    cy, cx = (np.asarray(points, np.float64).reshape(-1, 2)[:, k, None] for k in (0, 1))
    y0, x0 = origins if origins is not None else _tile_arrays(plan)
    y1, x1 = np.minimum(y0 + size, height), np.minimum(x0 + size, width)
    inside_y = ((y0 == 0) | (cy - y0 >= margin)) & ((y1 == height) | (y1 - 1 - cy >= margin))
    inside_x = ((x0 == 0) | (cx - x0 >= margin)) & ((x1 == width) | (x1 - 1 - cx >= margin))
    within = (y0 <= cy) & (cy < y1) & (x0 <= cx) & (cx < x1)
    hit = within & inside_y & inside_x
    # between the margins of neighbouring tiles: every tile holding the point
    hit = np.where(hit.any(axis=1, keepdims=True), hit, within)
    rows, tiles = np.nonzero(hit)
    bounds = np.searchsorted(rows, np.arange(len(hit) + 1)).tolist()
    tiles = tiles.tolist()
    return [frozenset(tiles[a:b]) for a, b in itertools.pairwise(bounds)]


def _box_hits(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` whose boxes ``a[i]`` and ``b[j]`` ``(y0, x0, y1, x1)`` intersect (two
    arrays, ``i`` then ``j`` ascending). Each box of ``b`` is compared only with the boxes of
    ``a`` that start in its band of rows (less the tallest box of ``a``): a window's neurons
    against the thousands found so far."""
    a, b = np.asarray(a, np.int64).reshape(-1, 4), np.asarray(b, np.int64).reshape(-1, 4)
    if not len(a) or not len(b):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(a[:, 0], kind="stable")
    top = a[order, 0]
    reach = int((a[:, 2] - a[:, 0]).max())
    first = np.searchsorted(top, b[:, 0] - reach, side="right")
    counts = np.maximum(np.searchsorted(top, b[:, 2], side="left") - first, 0)
    j = np.repeat(np.arange(len(b)), counts)
    i = order[np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts - first, counts)]
    hit = (a[i, 0] < b[j, 2]) & (b[j, 0] < a[i, 2]) & (a[i, 1] < b[j, 3]) & (b[j, 1] < a[i, 3])
    i, j = i[hit], j[hit]
    pairs = np.lexsort((j, i))
    return i[pairs], j[pairs]


def neuron_boxes(neurons: list[Neuron]) -> np.ndarray:
    """``(n, 4)`` int64: ``(y0, x0, y1, x1)`` of each neuron's footprint."""
    return np.array([n.total.box for n in neurons], np.int64).reshape(-1, 4)


def link_window(neurons: list[Neuron], window: int, found: list[WindowNeuron], plan: Plan, *,
                decide: DecideParams, stitch: StitchParams,
                boxes: np.ndarray | None = None) -> np.ndarray:
    """Link one window's neurons to ``neurons`` (rule 2), appending new ones; updates in place.

    ``boxes``: :func:`neuron_boxes` of ``neurons`` (computed when None); returns those of the
    updated list, for the next window (a neuron's box changes only when a window adds to it).
    """
    thr = decide.mask_threshold
    boxes = neuron_boxes(neurons) if boxes is None else boxes
    hit_i, hit_j = _box_hits(boxes, np.array([wn.footprint.box for wn in found], np.int64))
    near, near_i = np.unique(hit_i, return_inverse=True)  # only the neurons near this window's
    found_pixels = [mask_pixels(wn.footprint, thr) for wn in found]
    ious = mask_ious([neurons[k].pixels(thr) for k in near.tolist()], found_pixels, near_i,
                     hit_j)
    linked = ious >= stitch.link_iou
    pairs = sorted(zip((-ious[linked]).tolist(), hit_i[linked].tolist(), hit_j[linked].tolist(),
                       strict=True))
    used_i: set[int] = set()
    target: dict[int, int] = {}
    for _, i, j in pairs:
        if i not in used_i and j not in target:
            used_i.add(i)
            target[j] = i
    centroids = np.array([_centroid_of(p, wn.footprint)
                          for p, wn in zip(found_pixels, found, strict=True)]).reshape(-1, 2)
    coverings = covering_tiles_of(plan, centroids, EDGE_MARGIN, _tile_arrays(plan))
    first_new = len(neurons)
    for j, (wn, covering) in enumerate(zip(found, coverings, strict=True)):
        if j in target:
            neurons[target[j]].add(window, wn, covering)
        else:
            neuron = Neuron(total=None, count=None)  # type: ignore[arg-type]
            neuron.total, neuron.count = _accumulate(None, None, wn.footprint,
                                                     np.ones_like(wn.footprint.values))
            neuron.segments[window] = wn.trace
            neuron.detected, neuron.covering = len(wn.tiles & covering), len(covering)
            neuron.snr = wn.snr
            neurons.append(neuron)
    boxes = np.concatenate([boxes, neuron_boxes(neurons[first_new:])])
    grown = sorted(target.values())
    boxes[grown] = neuron_boxes([neurons[k] for k in grown])
    return boxes


def merge_duplicates(neurons: list[Neuron], *, decide: DecideParams,
                     stitch: StitchParams) -> list[Neuron]:
    """Merge neurons that overlap but never share a window (rule 3); returns a new list."""
    if len(neurons) < 2:
        return list(neurons)
    fps = [n.footprint for n in neurons]
    boxes = np.array([[f.y0, f.x0, *f.values.shape] for f in fps], dtype=np.int64)
    uf = _UnionFind(len(neurons))
    hit = np.array(boxes_overlap(boxes), np.int64).reshape(-1, 2)
    pixels = [n.pixels(decide.mask_threshold) for n in neurons]
    ious = mask_ious(pixels, pixels, hit[:, 0], hit[:, 1])
    for i, j in hit[ious >= stitch.link_iou].tolist():
        if not set(neurons[i].segments) & set(neurons[j].segments):
            uf.union(i, j)
    out = []
    for members in uf.groups():
        base = neurons[members[0]]
        for m in members[1:]:
            other = neurons[m]
            if set(base.segments) & set(other.segments):
                out.append(other)  # chained through a third neuron and co-active: keep apart
                continue
            base.total, base.count = _accumulate(base.total, base.count, other.total,
                                                 other.count.values)
            base.segments.update(other.segments)
            base.detected += other.detected
            base.covering += other.covering
            base.snr = max(base.snr, other.snr)
        out.append(base)
    return out


def assemble_trace(plan: Plan, segments: dict[int, np.ndarray]) -> np.ndarray:
    """Full-length trace ``(T,)`` float32 from per-window segments (rule 4)."""
    n_frames = plan.movie_shape[0]
    num = np.zeros(n_frames, np.float64)
    den = np.zeros(n_frames, np.float64)
    for w in plan.windows:
        weights = window_weights(plan, w.index)[: w.stop - w.first]
        den[w.first:w.stop] += weights
        if w.index in segments:
            num[w.first:w.stop] += weights * segments[w.index][: w.stop - w.first]
    covered = np.nonzero(den > 0)[0]
    trace = np.divide(num, den, out=np.zeros(n_frames), where=den > 0)
    if covered.size and covered.size < n_frames:  # the movie's first and last trace_offset frames
        trace = np.interp(np.arange(n_frames), covered, trace[covered])
    return trace.astype(np.float32)
