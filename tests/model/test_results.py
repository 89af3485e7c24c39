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


def test_additions_keep_the_metadata_consolidated(tmp_path):
    """After every addition the root ``zarr.json`` indexes every array (what a reader over
    HTTP, which cannot list a store, sees), and the index matches the arrays on disk."""
    import json

    from model.results import write_deconvolved, write_fluorescence, write_input_digest

    path = tmp_path / "r.zarr"
    writer = ResultWriter(path, movie_shape=(30, 20, 24), n_neurons=2,
                          attrs={"input": {"name": "m.tif", "sha256": "pending"}})
    writer.put_traces(np.ones((2, 30), np.float32))

    def indexed() -> dict:
        root = json.loads((path / "zarr.json").read_text())
        return root["consolidated_metadata"]["metadata"]

    traces = np.arange(60, dtype=np.float32).reshape(2, 30)
    write_fluorescence(path, traces, traces / 2, {"method": "test"})
    assert {"footprints", "traces", "fluorescence", "neuropil", "mean_image", "neurons",
            "neurons/area"} <= set(indexed())
    assert "calcium" not in indexed()
    write_deconvolved(path, traces, traces, {"method": "test"})
    write_input_digest(path, "ab" * 32)
    index = indexed()
    on_disk = {p.parent.relative_to(path).as_posix() for p in path.rglob("zarr.json")} - {"."}
    assert set(index) == on_disk
    group = zarr.open_group(str(path), mode="r")
    assert sorted(group.array_keys()) == sorted(
        k for k in on_disk if "/" not in k and k != "neurons")
    assert group.attrs["input"]["sha256"] == "ab" * 32
    write_fluorescence(path, traces + 1, traces, {"method": "again"})  # replaced, index current
    np.testing.assert_array_equal(read_result(path).fluorescence, traces + 1)
    assert set(indexed()) == on_disk
