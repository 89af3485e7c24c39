"""The neuron rule: soma contrast in the mean image, its activity escape, the long-movie share."""

import math

import numpy as np
import pytest
from inference_synthetic import disk

from model.inference.decide import keep_neuron, required_windows, soma_contrast
from model.inference.finalize import decide_all
from model.inference.params import DecideParams
from model.inference.refine import refine_footprint, split_touching
from model.inference.stitch import Footprint, Neuron


def _neuropil(shape=(64, 64), level=100.0, seed=0) -> np.ndarray:
    return level + np.random.default_rng(seed).normal(0, 2.0, shape)


def _on_at(mask: np.ndarray) -> tuple[np.ndarray, int, int]:
    ys, xs = np.nonzero(mask)
    y0, x0 = ys.min(), xs.min()
    return mask[y0:ys.max() + 1, x0:xs.max() + 1], int(y0), int(x0)


def test_a_soma_brighter_than_its_neuropil_has_positive_contrast():
    image = _neuropil()
    soma = disk(image.shape, (32, 32), 6)
    image[soma] += 30.0
    on, y0, x0 = _on_at(soma)
    assert 0.2 < soma_contrast(image, on, y0, x0) < 0.35


def test_a_neuropil_strip_beside_a_dark_vessel_has_no_contrast():
    image = _neuropil()
    image[:, 20:30] = 40.0  # a vessel blocks most of the light
    strip = np.zeros(image.shape, bool)
    strip[16:48, 30:36] = True  # plain neuropil on the vessel edge, brighter than the ring mean
    on, y0, x0 = _on_at(strip)
    ring_mean = image[16 - 10:48 + 10, 20:46].mean()
    assert image[strip].mean() > ring_mean
    assert soma_contrast(image, on, y0, x0) < 0.0


def test_contrast_near_the_frame_edge_uses_the_pixels_inside():
    image = _neuropil()
    soma = disk(image.shape, (2, 3), 5)
    image[soma] += 50.0
    on, y0, x0 = _on_at(soma)
    assert soma_contrast(image, on, y0, x0) > 0.3


def test_a_neuron_must_be_brighter_than_its_surroundings():
    params = DecideParams()
    common = {"area": 100, "n_windows": 5, "params": params, "total_windows": 5}
    assert keep_neuron(**common, contrast=0.2) == (True, "kept")
    keep, reason = keep_neuron(**common, contrast=-0.1)
    assert not keep and "not brighter" in reason
    assert keep_neuron(**common, contrast=math.nan) == (True, "kept")  # unknown
    off = DecideParams(min_contrast=None)
    assert keep_neuron(**{**common, "params": off}, contrast=-0.1) == (True, "kept")
    assert keep_neuron(**{**common, "area": params.min_area - 1}, contrast=0.2)[0] is False


def test_retired_parameters_of_stored_plans_are_accepted_and_ignored():
    from model.inference import InferenceParams

    old = InferenceParams.from_dict({"decide": {"min_snr": 3.0, "max_area": 400,
                                                "min_tile_evidence": 0.5, "active_snr": 8.0},
                                     "stitch": {"same_patch_iou": 0.5}})
    assert old.decide == DecideParams() and not hasattr(old.decide, "min_snr")
    with pytest.raises(ValueError):
        InferenceParams.from_dict({"decide": {"no_such_rule": 1}})


def test_window_share_is_rounded_up():
    params = DecideParams(min_window_fraction=0.1)
    assert required_windows(9, params) == 1
    assert required_windows(10, params) == 1
    assert required_windows(11, params) == 2
    assert required_windows(19, params) == 2
    assert required_windows(38, params) == 4
    assert required_windows(50, DecideParams(min_window_fraction=0.0)) == 1


def test_refining_cuts_a_footprint_to_its_soma():
    image = _neuropil()
    soma = disk(image.shape, (32, 32), 6)
    image[soma] += 40.0
    loose = disk(image.shape, (32, 32), 12)  # the cell and a wide margin of neuropil
    on, y0, x0 = _on_at(loose)
    (part, py, px), = refine_footprint(image, on, y0, x0, level=0.3, min_area=20)
    placed = np.zeros(image.shape, bool)
    placed[py:py + part.shape[0], px:px + part.shape[1]] = part
    assert (placed & soma).sum() / (placed | soma).sum() > 0.8


def test_refining_splits_one_footprint_over_two_cells():
    image = _neuropil()
    cells = [disk(image.shape, (32, 22), 5), disk(image.shape, (32, 42), 5)]
    for cell in cells:
        image[cell] += 40.0
    both = np.zeros(image.shape, bool)
    both[24:41, 14:51] = True
    on, y0, x0 = _on_at(both)
    parts = refine_footprint(image, on, y0, x0, level=0.3, min_area=20)
    assert len(parts) == 2
    centres = sorted(px + p.shape[1] / 2 for p, _, px in parts)
    assert abs(centres[0] - 22.5) < 2 and abs(centres[1] - 42.5) < 2


def test_a_footprint_dim_at_rest_is_left_as_it_is():
    image = _neuropil()
    soma = disk(image.shape, (32, 32), 6)
    image[soma] -= 5.0  # darker than its surroundings: found by its activity only
    on, y0, x0 = _on_at(soma)
    (part, py, px), = refine_footprint(image, on, y0, x0, level=0.3, min_area=20)
    assert (py, px) == (y0, x0) and np.array_equal(part, on)


def test_split_touching_cuts_two_overlapping_somata_between_their_centres():
    yy, xx = np.mgrid[:30, :40]
    two = ((yy - 15) ** 2 + (xx - 12) ** 2 <= 49) | ((yy - 15) ** 2 + (xx - 24) ** 2 <= 49)
    pieces = split_touching(two, 5, 7, distance=5.0, min_area=20)
    assert len(pieces) == 2
    (left, ly, lx), (right, _, rx) = sorted(pieces, key=lambda p: p[2])
    assert left.sum() + right.sum() == two.sum()
    assert (ly, lx) == (5 + 8, 7 + 5) and lx + left.shape[1] <= rx + 1  # cut near x = 18
    assert abs(int(left.sum()) - int(right.sum())) < 15


def test_split_touching_leaves_single_somata_and_small_pieces_whole():
    yy, xx = np.mgrid[:30, :40]
    for shape in (((yy - 15) ** 2 + (xx - 18) ** 2 <= 64),                 # a disk
                  (((yy - 15) / 6) ** 2 + ((xx - 18) / 10) ** 2 <= 1)):   # an elongated soma
        (part, y0, x0), = split_touching(shape, 0, 0, distance=5.0, min_area=20)
        assert part is shape and (y0, x0) == (0, 0)
    two = ((yy - 15) ** 2 + (xx - 12) ** 2 <= 49) | ((yy - 15) ** 2 + (xx - 24) ** 2 <= 49)
    (whole, _, _), = split_touching(two, 0, 0, distance=5.0, min_area=200)  # halves too small
    assert whole is two


def _chain_of_three_somata() -> tuple[np.ndarray, np.ndarray]:
    """A mean image with three touching somata in a row, and the one footprint the network gives
    all three (462 pixels)."""
    image = _neuropil((64, 80))
    chain = np.zeros(image.shape, bool)
    for x in (24, 37, 50):
        soma = disk(image.shape, (32, x), 7)
        image[soma] += 30.0
        chain |= soma
    return image, chain


def _neuron(mask: np.ndarray) -> Neuron:
    on, y0, x0 = _on_at(mask)
    values = on.astype(np.float32)
    return Neuron(total=Footprint(y0, x0, values), count=Footprint(y0, x0, np.ones_like(values)),
                  segments={0: np.ones(10, np.float32)}, detected=1, covering=1, snr=10.0)


def test_touching_somata_in_one_footprint_become_one_neuron_each():
    image, chain = _chain_of_three_somata()
    kept, reasons = decide_all([_neuron(chain)], DecideParams(), mean_image=image)
    assert len(kept) == 3 and reasons["split into separate somata"] == 2
    assert sorted(round(r.centroid[1]) for r in kept) == [24, 37, 50]
    assert all(r.area < chain.sum() / 2 for r in kept)


def test_without_the_split_touching_somata_stay_one_footprint():
    image, chain = _chain_of_three_somata()
    kept, _ = decide_all([_neuron(chain)], DecideParams(split_distance=None), mean_image=image)
    assert len(kept) == 1 and kept[0].area == chain.sum()


def _quiet(neuron: Neuron) -> Neuron:
    neuron.snr = 2.0  # no clear transient: the contrast rule decides
    return neuron


def test_touching_somata_without_transients_keep_every_piece():
    # each piece is measured against the neuropil around the chain, not its bright siblings
    image, chain = _chain_of_three_somata()
    kept, reasons = decide_all([_quiet(_neuron(chain))], DecideParams(), mean_image=image)
    assert len(kept) == 3 and reasons["split piece not brighter than its surroundings"] == 0
    assert all(r.contrast > 0.2 for r in kept)


def test_a_split_piece_of_plain_neuropil_beside_a_vessel_is_dropped():
    image = _neuropil((64, 80))
    image[:, 44:54] = 60.0  # a dark vessel
    soma = disk(image.shape, (32, 20), 6)
    image[soma] += 30.0
    strip = np.zeros(image.shape, bool)
    strip[14:50, 36:44] = True  # neuropil along the vessel's edge, as bright as any neuropil
    footprint = soma | strip
    footprint[30:35, 25:37] = True  # the network joined them
    assert soma_contrast(image, *_on_at(footprint)) > 0  # the whole passes the neuron rule
    # pieces of the strip are about 20 pixels: small enough for min_area's default to keep it
    # whole, so it is set where the pieces pass it and the contrast rule alone decides
    kept, reasons = decide_all([_quiet(_neuron(footprint))], DecideParams(min_area=20),
                               mean_image=image)
    assert reasons["split piece not brighter than its surroundings"] >= 1  # the strip's pieces
    assert len(kept) == 1 and np.allclose(kept[0].centroid, (32, 20), atol=1.5)


def _dim_cell_between_bright_ones() -> tuple[np.ndarray, list[np.ndarray]]:
    """A mean image with a dim soma (+12 over the neuropil) whose ring holds two bright ones
    (+60): the dim cell is brighter than the neuropil, not than the 90th percentile of its ring."""
    image = _neuropil((64, 80))
    masks = [disk(image.shape, (32, x), 6) for x in (22, 40, 58)]
    for mask, gain in zip(masks, (60.0, 12.0, 60.0), strict=True):
        image[mask] += gain
    return image, masks


def test_a_dim_cell_between_bright_neighbours_is_measured_without_them():
    image, masks = _dim_cell_between_bright_ones()
    dim = _on_at(masks[1])
    assert soma_contrast(image, *dim) < 0  # the ring's bright part is the neighbours
    neurons = [_quiet(_neuron(mask)) for mask in masks]
    kept, reasons = decide_all(neurons, DecideParams(), mean_image=image)
    assert len(kept) == 3
    assert reasons["kept once bright neighbours were left out of its ring"] == 1
    middle = min(kept, key=lambda r: abs(r.centroid[1] - 40))
    assert abs(middle.centroid[1] - 40) < 1.5 and middle.contrast > 0.05
    # switched off, the ring keeps every pixel and the dim cell fails the contrast rule
    kept, reasons = decide_all([_quiet(_neuron(mask)) for mask in masks],
                               DecideParams(bright_neighbour_contrast=None), mean_image=image)
    assert len(kept) == 2 and reasons["not brighter than its surroundings"]


def test_strips_along_a_vessel_do_not_rescue_each_other():
    # two false detections on the two edges of one vessel: neither is a clear soma, so neither
    # is left out of the other's ring, and both stay dropped
    image = _neuropil((64, 80))
    image[:, 36:44] = 60.0  # a dark vessel
    strips = [np.zeros(image.shape, bool) for _ in range(2)]
    strips[0][14:50, 30:36] = True
    strips[1][14:50, 44:50] = True
    kept, reasons = decide_all([_quiet(_neuron(s)) for s in strips], DecideParams(),
                               mean_image=image)
    assert kept == []
    assert reasons["not brighter than its surroundings"] == 2


def test_slow_neuropil_fluctuations_are_not_a_candidates_transients():
    # a 40 x 40 block of 100 frames: neuropil everywhere rises and falls slowly (far above the
    # frame-to-frame noise), one soma also fires; the network outlined both the soma and a
    # patch of plain neuropil. Only the soma has transients once the ring's light is removed.
    from types import SimpleNamespace

    from model.inference.decide import patch_candidates, pixel_major
    from model.inference.plan import Tile

    rng = np.random.default_rng(0)
    frames, size = 100, 40
    t = np.arange(frames)
    neuropil = 100 + 20 * np.sin(2 * np.pi * t / 60)  # slow, 60 frames per cycle
    block = neuropil[:, None, None] + rng.normal(0, 0.5, (frames, size, size))
    soma, patch = disk((size, size), (10, 10), 4), disk((size, size), (28, 28), 4)
    spikes = np.zeros(frames)
    spikes[[20, 55, 80]] = 30.0
    block[:, soma] += np.convolve(spikes, np.exp(-np.arange(30) / 8.0))[:frames, None]
    footprints = np.stack([soma, patch]).astype(np.float32)[None]  # (1 patch, 2 channels, S, S)
    outputs = SimpleNamespace(footprints=footprints, traces=np.zeros((1, 2, frames), np.float32))
    tile = Tile(index=0, y0=0, x0=0, own_y=(0, size), own_x=(0, size))

    def snrs() -> np.ndarray:
        return patch_candidates(
            outputs, 0, [tile], pixel_major(block), block_shape=(size, size), origin=(0, 0),
            frame_shape=(size, size), span=np.ones(1, np.float32), offset=0,
            params=DecideParams()).snr

    soma_snr, patch_snr = snrs()  # measured on the fluorescence less its ring's
    assert patch_snr < 3 < soma_snr


def _dim_cell_outlined_by_its_core() -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Six bright somata (radius 6) and a dim one beside the first; the network outlined the
    bright ones whole and only the core (radius 3) of the dim one."""
    image = _neuropil((96, 96))
    bright = [disk(image.shape, c, 6) for c in ((20, 20), (20, 60), (50, 80), (80, 20),
                                                 (80, 50), (80, 80))]
    for mask in bright:
        image[mask] += 40.0
    dim = disk(image.shape, (20, 33), 6)  # 1 pixel from the first bright soma
    image[dim] += 12.0
    return image, bright, dim


def test_a_dim_cell_outlined_by_its_core_grows_to_its_soma():
    image, bright, dim = _dim_cell_outlined_by_its_core()
    core = disk(image.shape, (20, 33), 3)
    neurons = [_neuron(mask) for mask in (*bright, core)]
    kept, reasons = decide_all(neurons, DecideParams(), mean_image=image)
    assert len(kept) == 7 and reasons["grown to its soma"] == 1
    grown = min(kept, key=lambda r: abs(r.centroid[1] - 33) + abs(r.centroid[0] - 20))
    placed = np.zeros(image.shape, bool)
    fp = grown.footprint
    h, w = fp.values.shape
    placed[fp.y0:fp.y0 + h, fp.x0:fp.x0 + w] = fp.values > 0
    assert (placed & dim).sum() / (placed | dim).sum() > 0.8
    assert not (placed & bright[0]).any()  # the bright neighbour's pixels stay its own
    assert grown.area == int(placed.sum())
    # switched off, the core stays as the network drew it
    kept, reasons = decide_all([_neuron(mask) for mask in (*bright, core)],
                               DecideParams(grow_below=None), mean_image=image)
    assert reasons["grown to its soma"] == 0
    assert min(r.area for r in kept) <= core.sum()


def test_footprints_of_typical_size_are_not_grown():
    image, bright, dim = _dim_cell_outlined_by_its_core()
    neurons = [_neuron(mask) for mask in (*bright, dim)]
    kept, reasons = decide_all(neurons, DecideParams(), mean_image=image)
    assert len(kept) == 7 and reasons["grown to its soma"] == 0


def _corrected_trace(block: np.ndarray, on: np.ndarray, y0: int, x0: int,
                     coefficient: float) -> np.ndarray:
    """The definition, one mask at a time: mean over ``on`` minus ``coefficient`` times the mean
    over the pixels 3 to 10 taxicab steps from it (clipped to the block)."""
    h, w = on.shape
    trace = block[:, y0:y0 + h, x0:x0 + w][:, on].mean(axis=1)
    placed = np.zeros(block.shape[1:], bool)
    placed[y0:y0 + h, x0:x0 + w] = on
    yy, xx = np.nonzero(placed)
    distance = np.full(placed.shape, np.inf)
    gy, gx = np.indices(placed.shape)
    for y, x in zip(yy, xx, strict=True):
        distance = np.minimum(distance, np.abs(gy - y) + np.abs(gx - x))
    ring = (distance > 2) & (distance <= 10)
    if not coefficient or not ring.any():
        return trace
    return trace - coefficient * block[:, ring].mean(axis=1)


def test_candidate_traces_all_at_once_match_one_mask_at_a_time():
    from model.inference.decide import corrected_traces, pixel_major

    rng = np.random.default_rng(3)
    block = rng.normal(100, 10, (30, 60, 70)).astype(np.float32)
    placed = []
    for y0, x0, h, w in ((0, 0, 6, 5), (20, 30, 9, 12), (50, 62, 10, 8), (3, 40, 1, 1),
                         (25, 2, 12, 3)):
        on = rng.random((h, w)) < 0.7
        on[0, 0] = True
        placed.append((on, y0, x0))
    for coefficient in (0.0, 0.7):
        found = corrected_traces(pixel_major(block), block.shape[1:], placed, coefficient)
        expected = np.stack([_corrected_trace(block, on, y0, x0, coefficient)
                             for on, y0, x0 in placed])
        np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-3)
    assert corrected_traces(pixel_major(block), block.shape[1:], [], 0.7).shape == (0, 30)
