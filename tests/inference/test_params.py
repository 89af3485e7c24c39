"""Parameters: bounds, JSON round trip, description table."""

import json

import pytest

from model.inference.params import DecideParams, InferenceParams, PlanParams, describe


def test_round_trip_through_json():
    p = InferenceParams(batch_size=4, plan=PlanParams(tile_overlap=16))
    assert InferenceParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_bounds_are_checked():
    with pytest.raises(ValueError, match="min_tile_evidence"):
        DecideParams(min_tile_evidence=1.5)
    with pytest.raises(ValueError, match="unknown"):
        InferenceParams.from_dict({"nope": 1})


def test_every_parameter_is_described():
    rows = describe()
    assert {"decide.min_snr", "plan.tile_overlap", "batch_size"} <= {r["name"] for r in rows}
    assert all(r["description"] for r in rows)
