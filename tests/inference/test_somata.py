"""The soma diameter estimated from a movie, and the dim somata found in its mean image."""

from __future__ import annotations

import numpy as np
import pytest

from model.inference.anatomy import dark_somata
from model.inference.scaling import sample_indices
from model.inference.somasize import estimate_soma_diameter
from model.simulate.movie import simulate
from model.simulate.params import SimulationParams


@pytest.mark.parametrize(("pixel_um", "occlusion"), [(1.0, (0.0, 0.0)), (0.6, (0.0, 0.0)),
                                                     (1.4, (0.6, 1.0))])
def test_the_estimated_diameter_is_the_simulated_one_within_a_third(pixel_um, occlusion):
    sim = simulate(SimulationParams(height=160, width=160, frames=120, seed=3, photons=4,
                                    density_per_mm2=1500, pixel_size_um=pixel_um,
                                    soma_occlusion=occlusion,
                                    baseline=(0.2, 1.0) if occlusion[1] else (0.4, 1.6)),
                   keep_clean=False)
    true = 2 * np.sqrt(np.median(sim.truth.masks.sum(axis=(1, 2))) / np.pi)
    found = estimate_soma_diameter(sim.movie[sample_indices(120, 100)])
    assert found is not None
    assert 0.75 * true <= found.diameter_px <= 1.33 * true, (found, true)


def test_no_estimate_from_a_field_of_one_or_two_cells():
    frames = np.random.default_rng(0).normal(100, 5, (50, 32, 32))
    assert estimate_soma_diameter(frames) is None


def _field(shape=(96, 96), seed=0):
    rng = np.random.default_rng(seed)
    image = 100.0 + ndimage_blur(rng.normal(0, 8, shape))
    return image


def ndimage_blur(noise):
    from scipy import ndimage

    return ndimage.gaussian_filter(noise, 1.0)


def _discs(image, centres, diameter, value):
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    out = image.copy()
    for cy, cx in centres:
        out[(yy - cy) ** 2 + (xx - cx) ** 2 <= (diameter / 2) ** 2] += value
    return out


def test_dim_somata_in_bright_neuropil_are_found_where_they_are():
    centres = [(20, 20), (20, 60), (50, 40), (75, 20), (75, 70)]
    image = _discs(_field(), centres, 9.0, -25.0)
    found = dark_somata(image, 9.0, 0.6)
    got = sorted(s.centre for s in found)
    assert len(got) == len(centres)
    for (cy, cx), (y, x) in zip(sorted(centres), got, strict=True):
        assert abs(cy - y) <= 1 and abs(cx - x) <= 1
    kept = np.zeros(image.shape, bool)
    kept[45:56, 35:46] = True  # a kept neuron already on one of them
    assert len(dark_somata(image, 9.0, 0.6, occupied=kept)) == len(centres) - 1


def test_the_neuropil_between_bright_somata_is_no_dim_soma():
    """Dense bright somata leave dark gaps of about their size between them; those are not
    somata, whether the network found the bright ones or not."""
    centres = [(y, x) for y in range(10, 90, 14) for x in range(10, 90, 14)]
    image = _discs(_field(seed=1), centres, 11.0, 60.0)
    assert dark_somata(image, 11.0, 0.6) == []
    yy, xx = np.mgrid[:96, :96]
    kept = np.zeros(image.shape, bool)
    for cy, cx in centres:
        kept |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 5.5 ** 2
    assert dark_somata(image, 11.0, 0.6, occupied=kept) == []
