"""Parameters: bounds, JSON round trip, description table."""

import json

import pytest

from model.inference.params import (
    DecideParams,
    InferenceParams,
    PlanParams,
    ResampleParams,
    describe,
)


def test_round_trip_through_json():
    p = InferenceParams(batch_size=4, plan=PlanParams(tile_overlap=16))
    assert InferenceParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_bounds_are_checked():
    with pytest.raises(ValueError, match="min_window_fraction"):
        DecideParams(min_window_fraction=1.5)
    with pytest.raises(ValueError, match="unknown"):
        InferenceParams.from_dict({"nope": 1})


def test_every_parameter_is_described():
    rows = describe()
    assert {"decide.min_contrast", "plan.tile_overlap", "batch_size"} <= {r["name"] for r in rows}
    assert all(r["description"] for r in rows)


def test_job_parameters_forward_binning_and_rescaling_to_the_engine():
    from caimx.job_params import JobParams, engine_overrides

    job = JobParams(temporal_bin=2, rescale=True, pixel_size_um=0.5, neuron_diameter_um=10.0)
    params = InferenceParams.from_dict(engine_overrides(job))
    assert (params.resample.temporal_bin, params.resample.rescale) == (2, True)
    assert (params.resample.pixel_size_um, params.resample.neuron_diameter_um) == (0.5, 10.0)
    assert InferenceParams.from_dict(engine_overrides(JobParams())).resample == ResampleParams()
    with pytest.raises(ValueError, match="rescale needs pixel_size_um"):
        JobParams(rescale=True)


def test_caimx_process_flags_set_binning_and_rescaling():
    from caimx.cli import build_parser
    from caimx.cli.process_cmd import _params
    from caimx.settings import Settings

    args = build_parser().parse_args([
        "process", "m.tif", "-o", "r.zarr", "--temporal-bin", "3", "--spatial-scale", "0.5",
        "--pixel-size", "0.8", "--neuron-diameter", "11"])
    resample = _params(args, Settings()).resample
    assert resample == ResampleParams(temporal_bin=3, spatial_scale=0.5, pixel_size_um=0.8,
                                      neuron_diameter_um=11.0)
    args = build_parser().parse_args(["process", "m.tif", "-o", "r.zarr", "--match-frame-rate",
                                      "--rescale", "--pixel-size", "0.5"])
    resample = _params(args, Settings()).resample
    assert resample.match_frame_rate and resample.rescale and resample.pixel_size_um == 0.5


def test_shifted_tiling_from_a_job_and_from_the_command_line():
    from caimx.cli import build_parser
    from caimx.cli.process_cmd import _params
    from caimx.job_params import JobParams, engine_overrides
    from caimx.settings import Settings

    assert InferenceParams.from_dict(engine_overrides(JobParams(shifted_tiling=True))).plan \
        .shifted_tiling
    assert not InferenceParams.from_dict(engine_overrides(JobParams())).plan.shifted_tiling
    args = build_parser().parse_args(["process", "m.tif", "-o", "r.zarr", "--shifted-tiling"])
    assert _params(args, Settings()).plan.shifted_tiling
    args = build_parser().parse_args(["process", "m.tif", "-o", "r.zarr"])
    assert not _params(args, Settings()).plan.shifted_tiling


def test_caimx_process_threads_and_batches_in_flight_from_flags_or_settings():
    from caimx.cli import build_parser
    from caimx.cli.process_cmd import _params
    from caimx.settings import Settings

    args = build_parser().parse_args(["process", "m.tif", "-o", "r.zarr", "--read-ahead", "12",
                                      "--candidate-threads", "4", "--batches-in-flight", "2"])
    params = _params(args, Settings())
    assert (params.read_ahead, params.candidate_threads, params.batches_in_flight) == (12, 4, 2)
    args = build_parser().parse_args(["process", "m.tif", "-o", "r.zarr"])
    params = _params(args, Settings(read_ahead=3, candidate_threads=2, batches_in_flight=0))
    assert (params.read_ahead, params.candidate_threads, params.batches_in_flight) == (3, 2, 0)


def test_deployment_settings_default_to_the_engine_defaults():
    # caimx.settings cannot import the engine (the API process stays free of it), so the
    # defaults are written twice; this keeps them equal (field defaults: the environment of the
    # test run does not count).
    from caimx.settings import Settings

    default = {name: field.default for name, field in Settings.model_fields.items()}
    engine = InferenceParams()
    assert (default["tile_overlap"], default["window_overlap"]) == (
        engine.plan.tile_overlap, engine.plan.window_overlap)
    assert (default["tile_size"], default["tiles_per_chunk"]) == (engine.plan.tile,
                                                                  engine.plan.tiles_per_chunk)
    assert (default["batch_size"], default["read_ahead"]) == (engine.batch_size,
                                                              engine.read_ahead)
    assert (default["candidate_threads"], default["batches_in_flight"]) == (
        engine.candidate_threads, engine.batches_in_flight)
    assert default["deconvolve_processes"] == engine.deconvolve_processes
