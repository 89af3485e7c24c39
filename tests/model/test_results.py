"""The Zarr v3 result group: write, read back, schema version, empty results."""

import numpy as np
import pytest
import zarr

from model.results import SCHEMA_VERSION, ResultWriter, read_result


def test_write_and_read_back(tmp_path):
    path = tmp_path / "r.zarr"
    w = ResultWriter(path, movie_shape=(30, 20, 24), n_neurons=2,
                     attrs={"input": {"name": "m.tif"}}, with_denoised=True)
    w.put_footprint(0, 2, 3, np.ones((4, 5), np.float32))
    w.put_footprint(1, 10, 10, np.full((2, 2), 0.7, np.float32))
    w.put_traces(np.arange(60, dtype=np.float32).reshape(2, 30))
    w.put_image("mean_image", np.ones((20, 24), np.float32))
    w.put_neurons({"centroid": [[3.5, 5], [10.5, 10.5]], "area": [20, 4], "snr": [5, 6],
                   "first_window": [0, 1], "n_windows": [1, 1], "tile_evidence": [1, 0.5]})
    w.put_denoised(0, np.ones((30, 20, 24), np.float32))
    r = read_result(path)
    assert r.n_neurons == 2
    assert r.footprints.shape == (2, 20, 24) and r.footprints[0].sum() == 20
    assert r.traces[1, -1] == 59
    assert r.attrs["schema_version"] == SCHEMA_VERSION and r.attrs["input"]["name"] == "m.tif"
    assert r.neurons["area"].tolist() == [20, 4]
    assert r.denoised.shape == (30, 20, 24)
    assert zarr.open_group(str(path), mode="r").metadata.zarr_format == 3


def test_no_neurons(tmp_path):
    ResultWriter(tmp_path / "r.zarr", movie_shape=(5, 8, 8), n_neurons=0, attrs={})
    r = read_result(tmp_path / "r.zarr")
    assert r.footprints.shape == (0, 8, 8) and r.traces.shape == (0, 5)


def test_not_a_result(tmp_path):
    with pytest.raises(ValueError, match="not a caimx result"):
        read_result(tmp_path / "missing.zarr")
