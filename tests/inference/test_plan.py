"""The chunk plan: coverage, snapping, padding rule, determinism, JSON round trip."""

import numpy as np
import pytest

from model.inference.params import InferenceParams, PlanParams
from model.inference.plan import Plan, make_plan, make_tiles, make_windows, padded_index


def _plan(shape, **kw):
    return make_plan(shape, patch=(100, 32, 32), trace_offset=2, params=PlanParams(**kw),
                     movie_low=0.0, movie_high=1.0, all_params=InferenceParams().to_dict())


@pytest.mark.parametrize("n_frames", [16, 95, 96, 97, 99, 100, 101, 250, 1000, 1003])
def test_windows_cover_every_frame_once_owned(n_frames):
    windows = make_windows(n_frames, 100, 2, 20)
    covered = np.zeros(n_frames, int)
    owned = np.zeros(n_frames, int)
    for w in windows:
        covered[w.first:w.stop] += 1
        owned[w.own_first:w.own_stop] += 1
        assert w.own_first <= w.own_stop
    assert np.all(owned == 1)
    # a movie of a window or more: its first and last 2 frames take the nearest covered trace
    edge = 2 if n_frames >= 100 else 0
    assert covered[edge:n_frames - edge].min() >= 1
    assert windows[0].first == edge and windows[-1].stop == n_frames - edge


@pytest.mark.parametrize("n_frames", [100, 250, 1003])
def test_windows_read_only_the_movie_own_frames(n_frames):
    """The network never sees a replicated frame once the movie holds a window; a movie of
    exactly one window is its input unchanged."""
    windows = make_windows(n_frames, 100, 2, 20)
    for w in windows:
        frames = padded_index(np.arange(w.start, w.start + 100), n_frames, before=2)
        assert np.array_equal(frames, np.arange(w.start - 2, w.start + 98))
    assert len(make_windows(100, 100, 2, 20)) == 1


def test_last_window_snapped_to_movie_end():
    windows = make_windows(250, 100, 2, 20)
    assert [w.start for w in windows] == [2, 82, 152]
    assert windows[-1].start - 2 + 100 == 250
    short = make_windows(60, 100, 2, 20)  # shorter than a window: padded
    assert [w.start for w in short] == [0]


@pytest.mark.parametrize("size", [8, 31, 32, 64, 100])
def test_tiles_cover_frame_and_own_each_pixel_once(size):
    tiles = make_tiles(size, size + 7, 32, 8)
    owned = np.zeros((size, size + 7), int)
    for t in tiles:
        owned[t.own_y[0]:t.own_y[1], t.own_x[0]:t.own_x[1]] += 1
        assert t.y0 + 32 <= max(size, 32) and t.x0 + 32 <= max(size + 7, 32)
    assert np.all(owned == 1)


def test_plan_is_deterministic_and_round_trips_json():
    a, b = _plan((250, 64, 80)), _plan((250, 64, 80))
    assert a.to_json() == b.to_json()
    back = Plan.from_json(a.to_json())
    assert back == a
    assert back.to_json() == a.to_json()


def test_chunks_group_tiles():
    plan = _plan((250, 64, 64), tiles_per_chunk=2)
    assert len(plan.tiles) == 9 and len(plan.windows) == 3
    assert len(plan.chunks) == 3 * 5
    for w in range(3):
        ids = [t for c in plan.chunks if c.window == w for t in c.tiles]
        assert ids == list(range(9))


@pytest.mark.parametrize(("shape", "match"), [
    ((10, 64, 64), "frames"), ((100, 4, 64), "too small"), ((100, 64), "dimensions"),
])
def test_bad_shapes_have_clear_errors(shape, match):
    with pytest.raises(ValueError, match=match):
        _plan(shape)


def test_padded_index_edges_and_mirror():
    idx = padded_index(np.arange(0, 12), 5, before=2)
    # 2 copies of frame 0, frames 0..4, 2 copies of frame 4, then mirror 4, 3, 2
    assert idx.tolist() == [0, 0, 0, 1, 2, 3, 4, 4, 4, 4, 3, 2]
    assert padded_index(np.arange(0, 8), 5).tolist() == [0, 1, 2, 3, 4, 4, 3, 2]


def test_patches_per_frame_counts_tiles_times_windows():
    wide = _plan((1000, 256, 256), tile_overlap=8)
    narrow = _plan((1000, 256, 256), tile_overlap=4)
    assert (len(wide.tiles), len(narrow.tiles)) == (121, 81)
    assert len(wide.windows) == len(narrow.windows) == 13
    assert narrow.patches_per_frame == 81 * 13 / 1000
    assert wide.patches_per_frame == 121 * 13 / 1000


def test_shifted_tiling_adds_a_half_stride_grid_that_owns_no_pixels():
    base = make_tiles(256, 256, 32, 4)
    both = make_tiles(256, 256, 32, 4, shifted=True)
    assert both[:len(base)] == base
    extra = both[len(base):]
    assert sorted({t.y0 for t in extra}) == list(range(14, 211, 28))  # 8 x 8 tiles, 14 px in
    assert len(extra) == 64 and all(t.x0 + 32 <= 256 and t.y0 + 32 <= 256 for t in extra)
    owned = np.zeros((256, 256), int)
    for t in both:
        owned[t.own_y[0]:t.own_y[1], t.own_x[0]:t.own_x[1]] += 1
    assert np.all(owned == 1)  # the images still come from the first grid alone
    plan = _plan((1000, 256, 256), shifted_tiling=True)
    assert len(plan.tiles) == 145 and Plan.from_json(plan.to_json()) == plan
    assert _plan((100, 20, 20), shifted_tiling=True).tiles == _plan((100, 20, 20)).tiles
