"""Stitching on synthetic candidates: tile corners, neighbours, windows, full-length traces."""

import numpy as np
from inference_synthetic import candidates_for, disk, small_plan

from model.inference.chunks import ChunkResult
from model.inference.finalize import finalize_result
from model.inference.params import DecideParams, InferenceParams, StitchParams
from model.inference.plan import window_weights
from model.inference.stitch import (
    Footprint,
    assemble_trace,
    boxes_overlap,
    mask_ious,
    mask_pixels,
    merge_tiles,
)
from model.results import read_result


def iou_and_containment(a: Footprint, b: Footprint, threshold: float,
                        region: tuple[int, int, int, int] | None = None) -> tuple[float, float]:
    """IoU and ``|a & b| / min(|a|, |b|)`` of the two binarized (``> threshold``) footprints,
    one pair at a time: the definition the engine's all-pairs-at-once versions
    (``mask_ious``, ``region_overlaps``) are checked against.

    ``region`` ``(y0, x0, y1, x1)``: compare only the pixels inside it (the part of the frame two
    tiles both see), so a footprint cut by one tile's border is compared with the part of the other
    tile's footprint that the first tile could see.
    """
    if region is not None:
        a, b = clip(a, region), clip(b, region)
    ay0, ax0, ay1, ax1 = a.box
    by0, bx0, by1, bx1 = b.box
    na, nb = int((a.values > threshold).sum()), int((b.values > threshold).sum())
    y0, x0, y1, x1 = max(ay0, by0), max(ax0, bx0), min(ay1, by1), min(ax1, bx1)
    if y1 <= y0 or x1 <= x0 or na == 0 or nb == 0:
        return 0.0, 0.0
    sa = a.values[y0 - ay0:y1 - ay0, x0 - ax0:x1 - ax0] > threshold
    sb = b.values[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0] > threshold
    inter = int((sa & sb).sum())
    return inter / (na + nb - inter), inter / min(na, nb)


def clip(fp: Footprint, region: tuple[int, int, int, int]) -> Footprint:
    """The part of ``fp`` inside ``region`` ``(y0, x0, y1, x1)`` (possibly empty)."""
    fy0, fx0, fy1, fx1 = fp.box
    y0, x0 = max(fy0, region[0]), max(fx0, region[1])
    y1, x1 = max(min(fy1, region[2]), y0), max(min(fx1, region[3]), x0)
    return Footprint(y0, x0, fp.values[y0 - fy0:y1 - fy0, x0 - fx0:x1 - fx0])


DECIDE = DecideParams(min_area=5)
STITCH = StitchParams()


def _chunks_loader(plan, per_window):
    """Chunk results for every window: ``per_window[w]`` is a list of candidate items."""
    size = plan.patch[1]
    results = {}
    for chunk in plan.chunks:
        cands = candidates_for(plan, per_window.get(chunk.window, []))
        images = np.zeros((len(chunk.tiles), 3, size, size), np.float32)
        results[chunk.id] = ChunkResult(chunk.id, chunk.window, chunk.tiles, cands, images)
    return results.__getitem__


def test_neuron_on_a_tile_corner_is_one_neuron():
    plan = small_plan()
    mask = disk((64, 64), (28, 28), 6)  # cut by the tiles at 0 and 32, whole in the tile at 24
    trace = np.ones(plan.trace_length)
    cands = candidates_for(plan, [(t.index, mask, trace) for t in plan.tiles])
    assert len(cands) == 9
    found = merge_tiles(cands, decide=DECIDE, stitch=STITCH, plan=plan)
    assert len(found) == 1
    fp = found[0].footprint
    full = np.zeros((64, 64), bool)
    full[fp.y0:fp.y0 + fp.values.shape[0], fp.x0:fp.x0 + fp.values.shape[1]] = fp.values > 0.5
    assert np.array_equal(full, mask)


def test_a_shifted_tiling_sees_the_same_neuron_once():
    plan = small_plan(shifted_tiling=True)  # 3 x 3 tiles at 0, 24, 32 and one more at (12, 12)
    assert [(t.y0, t.x0) for t in plan.tiles[9:]] == [(12, 12)]
    mask = disk((64, 64), (28, 28), 6)
    trace = np.ones(plan.trace_length)
    cands = candidates_for(plan, [(t.index, mask, trace) for t in plan.tiles])
    found = merge_tiles(cands, decide=DECIDE, stitch=STITCH, plan=plan)
    assert len(found) == 1 and found[0].tiles == set(range(10))
    assert _area(found[0].footprint) == mask.sum()


def test_touching_neighbours_stay_apart():
    plan = small_plan()
    a, b = disk((64, 64), (28, 20), 5), disk((64, 64), (28, 31), 5)
    trace = np.ones(plan.trace_length)
    items = [(t.index, m, trace) for t in plan.tiles for m in (a, b)]
    found = merge_tiles(candidates_for(plan, items), decide=DECIDE, stitch=STITCH, plan=plan)
    assert len(found) == 2


def test_overlapping_somata_in_one_patch_stay_apart():
    plan = small_plan()
    a, b = disk((64, 64), (20, 20), 6), disk((64, 64), (20, 29), 6)  # IoU about 0.1
    trace = np.ones(plan.trace_length)
    tile = plan.tiles[0].index
    found = merge_tiles(candidates_for(plan, [(tile, a, trace), (tile, b, trace)]),
                        decide=DECIDE, stitch=STITCH)
    assert len(found) == 2


def test_neuron_spanning_two_windows_is_linked_with_full_length_trace(tmp_path):
    plan = small_plan()
    n_frames, length = plan.movie_shape[0], plan.trace_length
    signal = np.sin(np.arange(n_frames) / 7.0) + 2.0
    mask = disk((64, 64), (10, 10), 5)
    per_window = {
        w.index: [(0, mask, signal[w.first:w.first + length])] for w in plan.windows[:2]
    }
    load = _chunks_loader(plan, per_window)
    params = InferenceParams(decide=DECIDE)
    info = finalize_result(plan, load, output=tmp_path / "r.zarr", params=params, attrs={})
    assert info["n_neurons"] == 1
    result = read_result(tmp_path / "r.zarr")
    assert result.traces.shape == (1, n_frames)
    w2 = plan.windows[2]
    # frames covered only by detecting windows reproduce the signal exactly (no double counting);
    # the movie's first 2 frames, which no window covers, take frame 2's value
    first = plan.windows[0].first
    np.testing.assert_allclose(result.traces[0, first:w2.first], signal[first:w2.first],
                               rtol=1e-5)
    np.testing.assert_allclose(result.traces[0, :first], signal[first], rtol=1e-5)
    assert result.neurons["n_windows"].tolist() == [2]
    assert result.neurons["first_window"].tolist() == [0]
    assert result.traces[0, -1] == 0.0  # window 2 alone covers the end and saw nothing


def test_assembled_trace_has_every_frame_and_holds_the_uncovered_ends():
    """Windows read only the movie's own frames: the first and last ``trace_offset`` frames,
    which no window's trace covers, take the nearest covered frame's value."""
    plan = small_plan((1003, 32, 32))
    signal = np.arange(1003, dtype=np.float32) + 1
    segments = {w.index: signal[w.first:w.first + plan.trace_length] for w in plan.windows}
    trace = assemble_trace(plan, segments)
    assert trace.shape == (1003,)
    np.testing.assert_allclose(trace[2:-2], signal[2:-2], rtol=1e-5)
    assert trace[:2].tolist() == [3.0, 3.0] and trace[-2:].tolist() == [1001.0, 1001.0]


def test_window_weights_ramp_only_inside_overlaps():
    plan = small_plan((400, 32, 32))
    first, last = window_weights(plan, 0), window_weights(plan, len(plan.windows) - 1)
    assert first[0] == 1.0 and first[-1] < 1.0
    assert last[-1] == 1.0 and last[0] < 1.0


def test_duplicates_seen_in_different_windows_merge(tmp_path):
    plan = small_plan()
    mask = disk((64, 64), (40, 40), 6)
    shifted = disk((64, 64), (41, 40), 6)
    length = plan.trace_length
    per_window = {0: [(4, mask, np.ones(length))], 2: [(8, shifted, np.ones(length))]}
    info = finalize_result(plan, _chunks_loader(plan, per_window), output=tmp_path / "r.zarr",
                           params=InferenceParams(decide=DECIDE), attrs={})
    assert info["n_neurons"] == 1


def test_covering_tiles_respect_margin_but_not_at_frame_edges():
    from model.inference.stitch import covering_tiles

    plan = small_plan()
    assert covering_tiles(plan, (28.0, 28.0), 4) == {4}
    assert covering_tiles(plan, (1.0, 1.0), 4) == {0}  # frame edges need no margin


def _centroid(fp):
    ys, xs = np.nonzero(fp.values > 0.5)
    return np.array([ys.mean() + fp.y0, xs.mean() + fp.x0])


def _area(fp):
    return int((fp.values > 0.5).sum())


def test_a_cell_cut_by_a_tile_border_is_one_neuron_where_the_whole_view_puts_it():
    # tiles at 0, 24 and 32: the cell at (30, 12) is whole only in the tile at 24; the tile at 0
    # sees its top and, as the network does with cells it sees in part, reports it 4 px inward
    plan = small_plan()
    whole = disk((64, 64), (30, 12), 4)
    displaced = disk((64, 64), (26, 12), 4)
    trace = np.ones(plan.trace_length)
    by_origin = {(t.y0, t.x0): t.index for t in plan.tiles}
    items = [(by_origin[(0, 0)], displaced, 2 * trace), (by_origin[(24, 0)], whole, trace),
             (by_origin[(32, 0)], whole, trace)]
    found = merge_tiles(candidates_for(plan, items), decide=DECIDE, stitch=STITCH, plan=plan)
    assert len(found) == 1
    assert np.abs(_centroid(found[0].footprint) - [30, 12]).max() <= 0.5
    assert _area(found[0].footprint) == whole.sum()
    np.testing.assert_allclose(found[0].trace, trace)  # the whole view's trace
    assert found[0].tiles == {by_origin[(0, 0)], by_origin[(24, 0)], by_origin[(32, 0)]}


def test_a_point_between_two_tiles_margins_is_covered_by_the_tiles_holding_it():
    from model.inference.stitch import covering_tiles

    plan = small_plan()  # tiles at 0 and 24 along y: margin 4 covers y <= 27 and y >= 28
    tiles = covering_tiles(plan, (27.5, 10.0), 4)
    assert {(plan.tiles[i].y0, plan.tiles[i].x0) for i in tiles} == {(0, 0), (24, 0)}


def test_long_movies_keep_somata_that_recur_and_drop_one_off_detections(tmp_path):
    """Over 20 windows a false detection seen once is dropped, a soma seen in most is kept;
    over 3 windows (too few for the share to matter) a neuron seen once stays."""
    soma = disk((64, 64), (20, 20), 6)
    one_off = disk((64, 64), (45, 45), 5)

    def run(frames: int, name: str) -> tuple[int, int, dict]:
        plan = small_plan((frames, 64, 64))
        n = len(plan.windows)
        trace = np.ones(plan.trace_length)
        per_window = {w: [(0, soma, trace)] for w in range(n) if w % 4 != 1}
        per_window.setdefault(n // 2, []).append((8, one_off, trace))
        info = finalize_result(plan, _chunks_loader(plan, per_window),
                               output=tmp_path / name, params=InferenceParams(decide=DECIDE),
                               attrs={})
        return n, info["n_neurons"], info["decisions"]

    n, kept, decisions = run(1600, "long.zarr")
    assert n >= 20 and kept == 1
    assert decisions.get("seen in too small a share of the windows") == 1
    n, kept, _ = run(250, "short.zarr")
    assert n == 3 and kept == 2
    off = DecideParams(min_area=5, min_window_fraction=0.0)
    plan = small_plan((1600, 64, 64))
    per_window = {w: [(0, soma, np.ones(plan.trace_length))] for w in range(len(plan.windows))}
    per_window[3].append((8, one_off, np.ones(plan.trace_length)))
    info = finalize_result(plan, _chunks_loader(plan, per_window), output=tmp_path / "off.zarr",
                           params=InferenceParams(decide=off), attrs={})
    assert info["n_neurons"] == 2


def test_overlapping_boxes_are_every_intersecting_pair_once():
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(0, 50))
        boxes = np.c_[rng.integers(0, 40, (n, 2)), rng.integers(0, 12, (n, 2))]  # some empty
        y0, x0, h, w = boxes.T
        expected = [(i, j) for i in range(n) for j in range(i + 1, n)
                    if y0[i] < y0[j] + h[j] and y0[j] < y0[i] + h[i]
                    and x0[i] < x0[j] + w[j] and x0[j] < x0[i] + w[i]]
        assert boxes_overlap(boxes) == expected


def test_mask_ious_are_the_pairwise_ious_of_the_binarized_footprints():
    rng = np.random.default_rng(8)

    def footprints(n):
        return [Footprint(int(rng.integers(-3, 30)), int(rng.integers(-3, 30)),
                          rng.random((int(rng.integers(1, 9)), int(rng.integers(1, 9))))
                          * rng.choice([0.0, 1.0], p=[0.1, 0.9]))  # some empty
                for _ in range(n)]

    overlapping = 0
    for _ in range(30):
        a, b = footprints(int(rng.integers(1, 25))), footprints(int(rng.integers(1, 25)))
        i, j = (g.ravel() for g in np.meshgrid(np.arange(len(a)), np.arange(len(b)),
                                                indexing="ij"))
        got = mask_ious([mask_pixels(f, 0.5) for f in a], [mask_pixels(f, 0.5) for f in b], i, j)
        expected = [iou_and_containment(a[p], b[q], 0.5)[0] for p, q in zip(i, j, strict=True)]
        assert got.tolist() == expected  # the same numbers, not merely close
        overlapping += int((got > 0).sum())
    assert overlapping > 100


def test_region_overlaps_are_the_pairwise_numbers_of_the_cut_footprints():
    """All pairs of a window at once give the IoU and containment of the pair-by-pair definition
    (each footprint cut to the pair's region), also for empty footprints, disjoint pairs and
    regions that cut nothing; the candidates' pixels from the flat masks are each mask's own."""
    from model.inference.decide import Candidates
    from model.inference.stitch import _FAR, candidate_pixels, region_overlaps

    rng = np.random.default_rng(9)
    compared = 0
    for _ in range(30):
        n = int(rng.integers(1, 30))
        shapes = rng.integers(0, 9, (n, 2))  # some with no pixels at all
        masks = [rng.random(tuple(s)).astype(np.float32) * rng.choice([0.0, 1.0], p=[0.1, 0.9])
                 for s in shapes]
        bbox = np.c_[rng.integers(0, 8, (n, 2)), shapes].astype(np.int32)  # most overlap
        cands = Candidates(
            tile=np.zeros(n, np.int32), channel=np.zeros(n, np.int32), bbox=bbox,
            mask_offsets=np.concatenate([[0], np.cumsum([m.size for m in masks])]).astype(
                np.int64),
            masks=np.concatenate([m.ravel() for m in masks]).astype(np.float32),
            traces=np.zeros((n, 3), np.float32), snr=np.zeros(n, np.float32))
        fps = [Footprint(int(b[0]), int(b[1]), m) for b, m in zip(bbox, masks, strict=True)]
        ys, xs, sizes = candidate_pixels(cands, 0.5)
        at = np.concatenate([[0], np.cumsum(sizes)])
        for k, fp in enumerate(fps):
            expected_ys, expected_xs = mask_pixels(fp, 0.5)
            assert ys[at[k]:at[k + 1]].tolist() == expected_ys.tolist()
            assert xs[at[k]:at[k + 1]].tolist() == expected_xs.tolist()
        i, j = rng.integers(0, n, 60), rng.integers(0, n, 60)
        corner = rng.integers(0, 12, (60, 2))
        regions = np.c_[corner, corner + rng.integers(1, 10, (60, 2))]
        regions[::3] = [-_FAR, -_FAR, _FAR, _FAR]
        iou, contained = region_overlaps((ys, xs, sizes), i, j, regions)
        for k in range(60):
            region = None if k % 3 == 0 else tuple(int(v) for v in regions[k])
            assert (iou[k], contained[k]) == iou_and_containment(fps[i[k]], fps[j[k]], 0.5,
                                                                 region)
        compared += int((iou > 0).sum())
    assert compared > 150


def test_candidates_taken_by_index_are_those_candidates():
    from model.inference.decide import Candidates

    rng = np.random.default_rng(10)
    shapes = rng.integers(0, 5, (12, 2))
    sizes = shapes.prod(axis=1)
    cands = Candidates(
        tile=np.arange(12, dtype=np.int32), channel=np.zeros(12, np.int32),
        bbox=np.c_[np.zeros((12, 2)), shapes].astype(np.int32),
        mask_offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        masks=rng.random(int(sizes.sum())).astype(np.float32),
        traces=rng.random((12, 4)).astype(np.float32), snr=rng.random(12).astype(np.float32))
    for keep in ([], [3], [0, 5, 11], list(range(12))):
        got = cands.take(np.array(keep, np.int64))
        singles = [Candidates(
            tile=cands.tile[k:k + 1], channel=cands.channel[k:k + 1], bbox=cands.bbox[k:k + 1],
            mask_offsets=np.array([0, sizes[k]], np.int64),
            masks=cands.masks[cands.mask_offsets[k]:cands.mask_offsets[k + 1]],
            traces=cands.traces[k:k + 1], snr=cands.snr[k:k + 1]) for k in keep]
        expected = Candidates.concat(singles, 4)
        for field in ("tile", "channel", "bbox", "mask_offsets", "masks", "traces", "snr"):
            a, b = getattr(got, field), getattr(expected, field)
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), field


def _covering_one_point(plan, point, margin):
    """The rule of :func:`covering_tiles`, one point and one tile at a time."""
    _, height, width = plan.movie_shape
    size = plan.patch[1]
    cy, cx = point
    within, inside = set(), set()
    for index, tile in enumerate(plan.tiles):
        y1, x1 = min(tile.y0 + size, height), min(tile.x0 + size, width)
        if not (tile.y0 <= cy < y1 and tile.x0 <= cx < x1):
            continue
        within.add(index)
        if ((tile.y0 == 0 or cy - tile.y0 >= margin) and (y1 == height or y1 - 1 - cy >= margin)
                and (tile.x0 == 0 or cx - tile.x0 >= margin)
                and (x1 == width or x1 - 1 - cx >= margin)):
            inside.add(index)
    return frozenset(inside or within)


def test_covering_tiles_of_many_points_are_each_points_tiles():
    from model.inference.stitch import covering_tiles, covering_tiles_of

    plan = small_plan()
    rng = np.random.default_rng(11)
    points = rng.uniform(-1, max(plan.movie_shape[1:]) + 1, (200, 2))
    points[:40] = np.round(points[:40])  # on whole pixels: at the margins exactly
    for margin in (0, 2, 4, 9):
        expected = [_covering_one_point(plan, p, margin) for p in points.tolist()]
        assert covering_tiles_of(plan, points, margin) == expected
        assert [covering_tiles(plan, tuple(p), margin) for p in points[:20].tolist()] == \
            expected[:20]
    assert covering_tiles_of(plan, np.zeros((0, 2)), 4) == []


def test_masks_cut_by_a_tile_border_that_is_no_frame_edge():
    from model.inference.stitch import CUT_BAND, cut_by_tile, tile_boxes

    plan = small_plan()  # 64 x 64, tiles at 0 and 24 (+ 32)
    boxes = tile_boxes(plan)
    rng = np.random.default_rng(12)
    tiles = rng.integers(0, len(boxes), 300)
    bbox = np.c_[rng.integers(0, 60, (300, 2)), rng.integers(1, 12, (300, 2))]
    got = cut_by_tile(bbox, boxes[tiles], (64, 64))
    for (y0, x0, h, w), (ty0, tx0, ty1, tx1), cut in zip(bbox.tolist(), boxes[tiles].tolist(),
                                                         got.tolist(), strict=True):
        assert cut == ((ty0 > 0 and y0 < ty0 + CUT_BAND) or (tx0 > 0 and x0 < tx0 + CUT_BAND)
                       or (ty1 < 64 and y0 + h > ty1 - CUT_BAND)
                       or (tx1 < 64 and x0 + w > tx1 - CUT_BAND))
    assert 20 < got.sum() < 280


def test_box_hits_between_two_sets_are_the_intersecting_pairs():
    from model.inference.stitch import _box_hits

    rng = np.random.default_rng(13)
    for _ in range(40):
        sets = []
        for n in rng.integers(0, 60, 2):
            corner = rng.integers(0, 50, (n, 2))
            sets.append(np.c_[corner, corner + rng.integers(0, 15, (n, 2))])  # some empty
        a, b = sets
        table = ((a[:, None, 0] < b[None, :, 2]) & (b[None, :, 0] < a[:, None, 2])
                 & (a[:, None, 1] < b[None, :, 3]) & (b[None, :, 1] < a[:, None, 3]))
        i, j = _box_hits(a, b)
        expected_i, expected_j = np.nonzero(table.reshape(len(a), len(b)))
        assert i.tolist() == expected_i.tolist() and j.tolist() == expected_j.tolist()


def test_summary_images_add_each_tiles_owned_region():
    """The summary images take every tile's owned region from its chunk (whole rows of tiles
    at once), for chunks of a few tiles, of the shifted grid (which owns nothing) and of a
    whole window alike: the per-tile definition, to the bit."""
    from model.inference.chunks import IMAGE_PLANES
    from model.inference.finalize import _Images

    rng = np.random.default_rng(14)
    for plan_kw in ({"tiles_per_chunk": 4}, {"shifted_tiling": True}, {}):
        plan = small_plan(shape=(250, 70, 64), **plan_kw)
        images = _Images(plan)
        mean = np.zeros(plan.movie_shape[1:])
        peak = np.full(plan.movie_shape[1:], -np.inf)
        moments = np.zeros((3, *plan.movie_shape[1:]))
        for chunk in plan.chunks:
            planes = rng.random((len(chunk.tiles), len(IMAGE_PLANES), 32, 32)).astype(np.float32)
            images.add(ChunkResult(chunk_id=chunk.id, window=chunk.window, tiles=chunk.tiles,
                                   candidates=candidates_for(plan, []), images=planes,
                                   denoised=None, shifts=None))
            for i, index in enumerate(chunk.tiles):
                tile = plan.tiles[index]
                (ya, yb), (xa, xb) = tile.own_y, tile.own_x
                local = planes[i, :, ya - tile.y0:yb - tile.y0, xa - tile.x0:xb - tile.x0]
                mean[ya:yb, xa:xb] += local[0]
                peak[ya:yb, xa:xb] = np.maximum(peak[ya:yb, xa:xb], local[1])
                moments[:, ya:yb, xa:xb] += local[3:]
        assert np.array_equal(images.mean, mean) and np.array_equal(images.max, peak)
        assert np.array_equal(images.moments, moments) and np.isfinite(peak).all()
