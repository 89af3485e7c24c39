"""Temporal binning and spatial rescaling: what the network sees, and the way back to the movie."""

from __future__ import annotations

import numpy as np
import pytest
from test_positions import CARD, PeakPredictor, disk_movie

from model.inference import InferenceParams, prepare, process_movie
from model.inference.params import ResampleParams
from model.inference.resample import ResampledMovie, choose, traces_to_frames
from model.inference.source import ArrayMovie
from model.results import read_result


def _array_movie(data, fps=None):
    movie = ArrayMovie(data)
    movie.fps = fps
    return movie


def test_bins_average_consecutive_frames_and_the_last_bin_takes_what_is_left():
    data = np.arange(7 * 4 * 5, dtype=np.float32).reshape(7, 4, 5)
    binned = ResampledMovie(_array_movie(data, fps=30.0), 3, 1.0)
    assert binned.shape == (3, 4, 5) and binned.fps == 10.0
    every = binned.read(0, 3)
    np.testing.assert_allclose(every[0], data[0:3].mean(axis=0))
    np.testing.assert_allclose(every[2], data[6])
    np.testing.assert_allclose(binned.read(1, 2, y=slice(1, 3), x=slice(2, 5)),
                               data[3:6, 1:3, 2:5].mean(axis=0)[None])


def test_binning_sums_integer_frames_without_overflow():
    data = np.full((9, 3, 3), 65535, np.uint16)
    data[8] = 1
    binned = ResampledMovie(_array_movie(data), 4, 1.0).read(0, 3)
    assert binned.dtype == np.float32 and binned.shape == (3, 3, 3)
    np.testing.assert_array_equal(binned[:2], 65535.0)
    np.testing.assert_array_equal(binned[2], 1.0)


def test_resized_frames_keep_their_content_in_place():
    yy, xx = np.mgrid[:40, :60]
    frame = np.exp(-((yy - 10) ** 2 + (xx - 30) ** 2) / 30.0).astype(np.float32)
    small = ResampledMovie(_array_movie(np.repeat(frame[None], 4, axis=0)), 1, 0.5)
    assert small.shape == (4, 20, 30)
    out = small.read(0, 4)
    peak = np.unravel_index(np.argmax(out[0]), out[0].shape)
    assert abs(peak[0] - 4.75) <= 0.5 and abs(peak[1] - 14.75) <= 0.5  # (10.5 / 2 - 0.5, ...)
    np.testing.assert_allclose(small.read(1, 2, y=slice(2, 8), x=slice(10, 20)), out[1:2, 2:8,
                                                                                     10:20])


def test_traces_go_back_to_every_frame_through_the_bin_centres():
    traces = np.array([[0.0, 3.0, 6.0]], np.float32)  # bins of 3 frames, centres at 1, 4, 7
    out = traces_to_frames(traces, 3, 8)  # the last bin holds frames 6 and 7: centre 6.5
    np.testing.assert_allclose(out[0, :5], [0, 0, 1, 2, 3])
    np.testing.assert_allclose(out[0, 5:], [3 + 3 / 2.5, 3 + 6 / 2.5, 6.0], rtol=1e-6)
    assert traces_to_frames(traces, 1, 3).shape == (1, 3)


def test_match_frame_rate_and_rescale_come_from_the_movie_and_the_model_card():
    card = dict(CARD, frame_rate_hz=10.0, pixel_size_um=1.0, neuron_diameter_um=8.0)
    movie = _array_movie(np.zeros((90, 64, 64), np.float32), fps=30.0)
    how = choose(movie, card, ResampleParams(match_frame_rate=True, rescale=True,
                                             pixel_size_um=0.5))
    assert (how.temporal_bin, how.spatial_scale) == (3, 0.5)
    assert how.record["network_frame_rate_hz"] == 10.0
    how = choose(movie, card, ResampleParams(rescale=True, pixel_size_um=1.0,
                                             neuron_diameter_um=16.0))
    assert how.spatial_scale == 0.5  # cells twice the trained size
    with pytest.raises(ValueError, match="frame rate"):
        choose(_array_movie(np.zeros((90, 64, 64))), card, ResampleParams(match_frame_rate=True))
    with pytest.raises(ValueError, match="neuron_diameter_um in the model card"):
        choose(movie, CARD, ResampleParams(rescale=True, pixel_size_um=1.0))
    with pytest.raises(ValueError, match="not both"):
        ResampleParams(rescale=True, spatial_scale=0.5)


def test_with_nothing_given_the_bin_and_scale_come_from_what_the_movie_says():
    """No option: the bin from the file's frame rate (none when unknown), the scale from the
    estimated soma diameter when it is more than 20 % off the model's; options override."""
    from model.inference.somasize import SomaSize

    card = dict(CARD, frame_rate_hz=10.0, pixel_size_um=1.0, neuron_diameter_um=12.0)
    fast = _array_movie(np.zeros((90, 64, 64), np.float32), fps=31.0)
    how = choose(fast, card, ResampleParams(), SomaSize(18.0))
    assert (how.temporal_bin, how.spatial_scale) == (3, 12.0 / 18.0)
    assert how.record["temporal_bin_from"] == "frame rates"
    assert how.record["soma_diameter_px"] == 18.0
    assert how.record["network_soma_diameter_px"] == 12.0
    how = choose(fast, card, ResampleParams(), SomaSize(8.0))  # smaller somata: not enlarged
    assert how.spatial_scale == 1.0 and how.record["network_soma_diameter_px"] == 8.0
    assert how.record["spatial_scale_from"].startswith("somata smaller than the model's")
    unknown = _array_movie(np.zeros((90, 64, 64), np.float32))
    how = choose(unknown, card, ResampleParams(), SomaSize(11.0))  # within 20 %: left alone
    assert (how.temporal_bin, how.spatial_scale) == (1, 1.0)
    assert how.record["temporal_bin_from"] == "frame rate unknown"
    assert how.record["network_soma_diameter_px"] == 11.0
    how = choose(unknown, card, ResampleParams(), SomaSize(100.0))  # shrunk 2.5x at most
    assert how.spatial_scale == 0.4
    how = choose(unknown, card, ResampleParams(), None)  # nothing estimated: the model's size
    assert how.spatial_scale == 1.0 and how.record["network_soma_diameter_px"] == 12.0
    how = choose(fast, card, ResampleParams(temporal_bin=2, soma_diameter_px=11.0),
                 SomaSize(8.0))  # given values win, a given diameter is matched exactly
    assert (how.temporal_bin, how.spatial_scale) == (2, 12.0 / 11.0)
    assert choose(fast, card, ResampleParams(spatial_scale=1.0), SomaSize(8.0)).spatial_scale == 1
    with pytest.raises(ValueError, match="not two of them"):
        ResampleParams(soma_diameter_px=9.0, spatial_scale=1.0)


def test_binned_run_gives_every_frame_a_trace_and_records_the_bin(tmp_path):
    centers = [(6.0, 6.0), (20.0, 22.0), (32.0, 9.0)]
    movie, masks = disk_movie(centers, shape=(150, 40, 40))
    params = InferenceParams.from_dict({"resample": {"temporal_bin": 3},
                                        "plan": {"window_overlap": 8},
                                        "motion": {"enabled": False},
                                        "decide": {"min_area": 10}})
    process_movie(_array_movie(movie, fps=30.0), PeakPredictor(), output=tmp_path / "r.zarr",
                  params=params)
    result = read_result(tmp_path / "r.zarr")
    assert result.traces.shape == (3, 150)
    assert result.attrs["resample"]["temporal_bin"] == 3
    assert result.attrs["resample"]["network_frame_rate_hz"] == 10.0
    assert result.attrs["parameters"]["resample"]["temporal_bin"] == 3
    assert result.attrs["plan"]["network_shape"] == [50, 40, 40]
    truth = np.array([movie[:, m].mean(axis=1) for m in masks])
    bins = np.array([[t[i:i + 3].mean() for i in range(0, 150, 3)] for t in truth])
    seen = traces_to_frames(bins, 3, 150)  # what a network reporting exact bin means gives
    # the first and last 2 network frames (6 movie frames) take the nearest window's value
    inner = slice(6, 144)
    for k, fp in enumerate(result.footprints > 0):
        j = int(np.argmax([(fp & m).sum() for m in masks]))
        assert np.corrcoef(result.traces[k, inner], seen[j, inner])[0, 1] > 0.95
        assert np.corrcoef(result.traces[k, inner], truth[j, inner])[0, 1] > 0.75


def test_rescaled_run_finds_big_cells_and_returns_footprints_on_the_movie_grid(tmp_path):
    centers = [(12.0, 12.0), (40.0, 44.0), (60.0, 18.0)]
    movie, masks = disk_movie(centers, shape=(60, 80, 80), radius=6.0)
    params = InferenceParams.from_dict({"resample": {"spatial_scale": 0.5},
                                        "plan": {"window_overlap": 8},
                                        "motion": {"enabled": False},
                                        "decide": {"min_area": 10}})
    process_movie(movie, PeakPredictor(), output=tmp_path / "r.zarr", params=params)
    result = read_result(tmp_path / "r.zarr")
    assert result.footprints.shape == (3, 80, 80)
    assert result.images["mean_image"].shape == (80, 80)
    for mask in masks:
        true = np.array(np.nonzero(mask)).mean(axis=1)
        found = [np.array(np.nonzero(f)).mean(axis=1) for f in result.footprints > 0]
        assert min(np.linalg.norm(f - true) for f in found) <= 1.0
    ious = [max(((f & m).sum() / (f | m).sum()) for f in result.footprints > 0) for m in masks]
    assert min(ious) >= 0.7
    assert result.neurons["area"].min() >= 0.7 * masks.sum(axis=(1, 2)).min()


def test_a_movie_too_short_once_binned_is_refused_saying_so(tmp_path):
    params = InferenceParams.from_dict({"resample": {"temporal_bin": 4}})
    with pytest.raises(ValueError, match="binned by 4"):
        prepare(np.zeros((40, 32, 32), np.float32) + np.arange(40)[:, None, None], CARD,
                work_dir=tmp_path, params=params)
