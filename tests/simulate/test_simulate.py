"""Simulator: determinism, ground-truth consistency, activity, shapes and file formats."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from model.simulate import (
    INDICATORS,
    SimulationParams,
    load_ground_truth,
    save_ground_truth,
    simulate,
    write_simulation,
)
from model.simulate.activity import indicator_response
from model.simulate.background import apply_shifts

SMALL = SimulationParams(height=48, width=40, frames=130, density_per_mm2=3000.0,
                         process_fraction=0.5, vessels=20)


def _sum_of_parts(truth) -> np.ndarray:
    """The documented generative model, rebuilt from the ground-truth file's parts."""
    p, c = truth.params, truth.components
    j = c["neuropil_fields"].shape[0]
    mod = np.einsum("jt,jhw->thw", c["neuropil_traces"], c["neuropil_fields"])
    neuropil = c["neuropil_mean"] * np.maximum(1 + p.neuropil_fluctuation * mod, 0)
    assert j >= 1
    cells = np.einsum("khw,kt->thw", truth.footprints,
                      truth.baselines[:, None] * (1 + truth.traces))
    rel = c["vessel"] * c["bleach"][:, None, None] * (neuropil + cells)
    rel = apply_shifts(rel.astype(np.float32), c["shifts"])
    return p.offset + p.gain * p.photons * rel


def test_same_seed_same_bytes() -> None:
    a, b = simulate(SMALL), simulate(SMALL)
    assert a.movie.tobytes() == b.movie.tobytes()
    assert a.footprints.tobytes() == b.footprints.tobytes()
    assert a.traces.tobytes() == b.traces.tobytes()
    c = simulate(SMALL.replace(seed=1))
    assert c.movie.shape == a.movie.shape and not np.array_equal(c.movie, a.movie)


def test_shapes_and_dtypes() -> None:
    sim = simulate(SMALL)
    k = sim.truth.count
    assert k > 3
    assert sim.movie.shape == (130, 48, 40) and sim.movie.dtype == np.float32
    assert sim.clean.shape == (130, 48, 40) and sim.clean.dtype == np.float32
    assert sim.footprints.shape == (k, 48, 40) and sim.footprints.dtype == np.float32
    assert sim.truth.masks.dtype == bool and sim.truth.masks.shape == (k, 48, 40)
    assert sim.traces.shape == (k, 130) and sim.traces.dtype == np.float32
    assert sim.spikes.shape == (k, 130) and sim.spikes.dtype == np.uint16
    assert sim.footprints.min() >= 0 and sim.footprints.max() <= 1
    assert np.all(sim.footprints.reshape(k, -1).max(1) > 0)
    u16 = simulate(SMALL.replace(dtype="uint16"))
    assert u16.movie.dtype == np.uint16


def test_clean_movie_is_the_sum_of_its_parts() -> None:
    sim = simulate(SMALL.replace(bleach_tau_s=2.0, bleach_fraction=0.5))
    np.testing.assert_allclose(sim.clean, _sum_of_parts(sim.truth), rtol=1e-4, atol=1e-2)


def test_sum_of_parts_with_motion() -> None:
    sim = simulate(SMALL.replace(motion_um=1.5))
    assert np.abs(sim.truth.components["shifts"]).max() > 0.5
    np.testing.assert_allclose(sim.clean, _sum_of_parts(sim.truth), rtol=1e-4, atol=1e-2)


def test_noise_is_poisson_gaussian_around_the_clean_movie() -> None:
    p = SMALL.replace(frames=256, photons=10.0, gain=3.0, read_noise=2.0)
    sim = simulate(p)
    resid = sim.movie - sim.clean
    expected_var = p.gain * (sim.clean - p.offset) + p.read_noise**2
    assert abs(resid.mean()) < 0.05 * np.sqrt(expected_var.mean())
    assert np.var(resid) == pytest.approx(expected_var.mean(), rel=0.05)
    quiet = simulate(p.replace(noise=False))
    np.testing.assert_allclose(quiet.movie, quiet.clean, rtol=1e-6)


def test_silent_cells_have_no_spikes_and_flat_traces() -> None:
    sim = simulate(SMALL.replace(silent_fraction=0.5, rate_hz=(2.0, 5.0)))
    silent = sim.truth.silent
    assert silent.any() and (~silent).any()
    assert np.all(sim.spikes[silent] == 0)
    assert np.all(sim.traces[silent] == 0)
    assert np.all(sim.spikes[~silent].sum(1) > 0)


def test_footprint_threshold_is_the_soma_mask() -> None:
    truth = simulate(SMALL).truth
    soma = truth.footprints >= 0.5
    inter = (soma & truth.masks).sum()
    union = (soma | truth.masks).sum()
    assert inter / union > 0.9


@pytest.mark.parametrize("name", sorted(INDICATORS))
def test_indicator_single_spike_and_saturation(name: str) -> None:
    kin = INDICATORS[name]
    spikes = np.zeros((2, 200))
    spikes[0, 10] = 1
    spikes[1, 10] = 40
    dff = indicator_response(spikes, kin, 30.0)
    assert dff[0, :10].max() == 0
    assert dff[0].max() == pytest.approx(kin.dff_1ap, rel=0.1)
    assert kin.dff_1ap * 10 < dff[1].max() < kin.dff_max
    peak = int(dff[0].argmax())
    assert dff[0, peak + int(30 * kin.decay_s)] < 0.5 * dff[0, peak]


def test_ground_truth_round_trip(tmp_path) -> None:
    sim = simulate(SMALL)
    path = save_ground_truth(tmp_path / "m.gt.npz", sim.truth)
    back = load_ground_truth(path)
    assert back.params == SMALL
    for key in ("footprints", "masks", "traces", "spikes", "baselines", "silent"):
        np.testing.assert_array_equal(getattr(back, key), getattr(sim.truth, key))
    np.testing.assert_array_equal(back.clean, sim.clean)


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_streamed_file_equals_in_memory_movie(tmp_path, suffix: str) -> None:
    p = SMALL.replace(dtype="uint16")
    path = tmp_path / f"movie{suffix}"
    write_simulation(p, path, clean_path=tmp_path / f"clean{suffix}")
    sim = simulate(p)
    if suffix == ".tif":
        movie, clean = tifffile.imread(path), tifffile.imread(tmp_path / "clean.tif")
    else:
        import zarr

        movie, clean = zarr.open_array(str(path))[:], zarr.open_array(
            str(tmp_path / "clean.zarr"))[:]
    np.testing.assert_array_equal(movie, sim.movie)
    np.testing.assert_array_equal(clean, sim.clean)
    truth = load_ground_truth(path)
    np.testing.assert_array_equal(truth.footprints, sim.footprints)


def test_invalid_params_raise() -> None:
    with pytest.raises(ValueError, match="indicator"):
        SimulationParams(indicator="GCaMP3")
    with pytest.raises(ValueError, match="silent_fraction"):
        SimulationParams(silent_fraction=1.5)
    with pytest.raises(ValueError, match="soma_diameter_um"):
        SimulationParams(soma_diameter_um=(12.0, 5.0))


def test_somata_keep_their_separation_and_zero_restores_independent_placement():
    from model.simulate.cells import place_cells
    from model.simulate.scene import make_vessels

    def layout(separation):
        params = SimulationParams(height=128, width=128, frames=4, density_per_mm2=3000.0,
                                  soma_separation=separation, seed=5)
        seeds = np.random.SeedSequence(params.seed).spawn(5)
        vessel = make_vessels(params, np.random.default_rng(seeds[0]))
        return place_cells(params, np.random.default_rng(seeds[1]), vessel)

    def worst_overlap(cells):
        masks = cells.masks.toarray().reshape(cells.count, 128, 128)
        covered = masks.sum(axis=0)
        return max(float((covered[m] > 1).mean()) for m in masks)

    apart, free = layout(0.7), layout(0.0)
    radius = apart.axes.mean(axis=1)
    d = np.hypot(*(apart.centers[:, None] - apart.centers[None]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    assert np.all(d >= 0.7 * (radius[:, None] + radius[None]) - 1e-9)
    assert worst_overlap(apart) < 0.5 < worst_overlap(free)
    assert apart.count >= 0.95 * free.count  # nearly every cell finds a place at 3000/mm^2
