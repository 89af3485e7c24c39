"""Exports read back with the readers the scientists use: pynwb, numpy as Suite2p, tifffile."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from small_result import write_small_result

from model.exports import build_download, download_path, export_result
from model.results import read_result


def test_nwb_validates_and_reads_back(small_result: Path, tmp_path: Path) -> None:
    from pynwb import NWBHDF5IO, validate

    path = export_result(small_result, tmp_path / "out", format="nwb")
    assert path == tmp_path / "out" / "movie.nwb"
    assert validate(path=str(path)) == []
    expected = read_result(small_result)
    with NWBHDF5IO(str(path), mode="r") as io:
        nwb = io.read()
        ophys = nwb.processing["ophys"]
        assert ophys.description.endswith(", computed by TensorFlow 2.21.0 SavedModel, CPU")
        planes = ophys["ImageSegmentation"]["PlaneSegmentation"]
        masks = planes["image_mask"].data[:]  # NWB: (K, x, y)
        np.testing.assert_array_equal(masks, expected.footprints.transpose(0, 2, 1))
        series = ophys["Fluorescence"]["RoiResponseSeries"]
        np.testing.assert_array_equal(series.data[:], expected.traces.T)
        assert series.rate == 30.0 and series.starting_time == 0.0
        assert list(series.rois.data[:]) == [0, 1, 2]
        assert planes["snr"].data[:].tolist() == pytest.approx([4, 6, 8])
        assert nwb.imaging_planes["imaging_plane"].imaging_rate == 30.0
        for name, key in (("mean", "mean_image"), ("correlation", "correlation_image")):
            image = ophys["SummaryImages"][name].data[:]  # NWB: (x, y)
            np.testing.assert_allclose(image, expected.images[key].T)
        assert "Denoised" not in ophys.data_interfaces


def test_nwb_axis_order_round_trips(tmp_path: Path) -> None:
    """A non-square result (40 rows, 36 columns) with its denoised movie: the NWB file holds
    every image (x, y) as the schema says, and the caimx NWB reader gives back (T, H, W)."""
    from pynwb import NWBHDF5IO, validate

    from model.exports import nwb as nwb_export
    from model.io import open_movie

    result = write_small_result(tmp_path / "r.zarr", denoised=True, t=50, h=40, w=36)
    expected = read_result(result)
    denoised = expected.denoised[...]
    assert denoised.shape == (50, 40, 36)
    small_blocks = {"MASK_BLOCK": 2, "FRAME_BLOCK_BYTES": 4 * 40 * 36 * 7}  # 7 frames a block
    originals = {name: getattr(nwb_export, name) for name in small_blocks}
    try:
        for name, value in small_blocks.items():
            setattr(nwb_export, name, value)
        path = export_result(result, tmp_path / "out", format="nwb")
    finally:
        for name, value in originals.items():
            setattr(nwb_export, name, value)
    assert validate(path=str(path)) == []
    with NWBHDF5IO(str(path), mode="r") as io:
        ophys = io.read().processing["ophys"]
        masks = ophys["ImageSegmentation"]["PlaneSegmentation"]["image_mask"].data
        assert masks.shape == (3, 36, 40)
        for k in range(3):  # image_mask[k, x, y] == footprints[k, y, x]
            cy, cx = expected.neurons["centroid"][k].astype(int)
            assert masks[k, cx, cy] == expected.footprints[k, cy, cx] > 0
        np.testing.assert_array_equal(masks[:], expected.footprints.transpose(0, 2, 1))
        for name, key in (("mean", "mean_image"), ("attention", "attention_mean")):
            image = ophys["SummaryImages"][name].data[:]
            assert image.shape == (36, 40)
            np.testing.assert_allclose(image, expected.images[key].T)
        series = ophys["Denoised"]
        assert series.data.shape == (50, 36, 40) and list(series.dimension[:]) == [36, 40]
        assert series.data.chunks == (7, 36, 40)
        np.testing.assert_array_equal(series.data[:], denoised.transpose(0, 2, 1))
    with open_movie(path, dataset="Denoised") as movie:  # export -> read: (T, H, W) again
        assert movie.shape == (50, 40, 36) and movie.fps == 30.0
        np.testing.assert_array_equal(movie.read(0, 50), denoised)
        np.testing.assert_array_equal(movie.read(10, 17, y=slice(5, 30), x=slice(2, 9)),
                                      denoised[10:17, 5:30, 2:9])


def test_nwb_rate_given_or_unknown(tmp_path: Path) -> None:
    from pynwb import NWBHDF5IO

    result = write_small_result(tmp_path / "r.zarr", fps=None)
    unknown = export_result(result, tmp_path / "a", format="nwb")
    given = export_result(result, tmp_path / "b", format="nwb", fs=7.5)
    with NWBHDF5IO(str(unknown), mode="r") as io:
        series = io.read().processing["ophys"]["Fluorescence"]["RoiResponseSeries"]
        assert series.rate == 1.0 and "frame indices" in series.description
    with NWBHDF5IO(str(given), mode="r") as io:
        assert io.read().processing["ophys"]["Fluorescence"]["RoiResponseSeries"].rate == 7.5
    with pytest.raises(ValueError, match="positive"):
        export_result(result, tmp_path / "c", format="nwb", fs=-1)


def test_suite2p_folder_loads_as_the_gui_loads_it(small_result: Path, tmp_path: Path) -> None:
    plane = export_result(small_result, tmp_path, format="suite2p")
    assert plane == tmp_path / "suite2p" / "plane0"
    expected = read_result(small_result)
    # What suite2p.gui.io.load_proc does, file by file.
    stat = np.load(plane / "stat.npy", allow_pickle=True)
    ypix = stat[0]["ypix"]
    assert ypix.dtype == np.int32
    F, Fneu, spks = (np.load(plane / f"{n}.npy") for n in ("F", "Fneu", "spks"))
    ops = np.load(plane / "ops.npy", allow_pickle=True).item()
    iscell = np.load(plane / "iscell.npy")
    probcell, iscell = iscell[:, 1], iscell[:, 0].astype(bool)
    assert len(stat) == F.shape[0] == Fneu.shape[0] == spks.shape[0] == iscell.shape[0] == 3
    np.testing.assert_array_equal(F, expected.traces)
    assert not Fneu.any() and iscell.all() and probcell.tolist() == pytest.approx([0.5, 0.75, 1])
    assert (ops["Ly"], ops["Lx"], ops["nframes"], ops["fs"]) == (40, 36, 50, 30.0)
    assert ops["meanImg"].shape == ops["meanImgE"].shape == ops["max_proj"].shape == (40, 36)
    np.testing.assert_array_equal(ops["Vcorr"], read_result(small_result).images[
        "correlation_image"])  # the GUI's "correlation map" (full frame: x/yrange below)
    assert ops["tau"] > 0 and ops["xrange"] == [0, 36] and ops["yrange"] == [0, 40]
    for k, entry in enumerate(stat):
        mask = np.zeros((40, 36))
        mask[entry["ypix"], entry["xpix"]] = entry["lam"]
        np.testing.assert_allclose(mask, expected.footprints[k])
        assert entry["npix"] == 29 == len(entry["xpix"])
        cy, cx = expected.neurons["centroid"][k]
        assert entry["med"] == [int(cy), int(cx)]
        assert entry["radius"] == pytest.approx(3.0, rel=0.2)  # a disc of radius 3
        assert 0.9 < entry["aspect_ratio"] < 1.1 and entry["compact"] == pytest.approx(1, abs=0.1)
        for key in ("skew", "std", "snr", "npix_norm", "footprint"):
            assert np.isfinite(entry[key])


def test_suite2p_f_and_fneu_are_the_fluorescence_read_from_the_movie(small_result: Path,
                                                                      tmp_path: Path) -> None:
    from model.results import write_fluorescence

    k, n_frames = read_result(small_result).traces.shape
    rng = np.random.default_rng(0)
    f, fneu = rng.random((k, n_frames), np.float32), rng.random((k, n_frames), np.float32)
    write_fluorescence(small_result, f, fneu, {"coefficient": 0.7})
    plane = export_result(small_result, tmp_path, format="suite2p")
    np.testing.assert_array_equal(np.load(plane / "F.npy"), f)
    np.testing.assert_array_equal(np.load(plane / "Fneu.npy"), fneu)
    np.testing.assert_allclose(read_result(small_result).corrected, f - 0.7 * fneu)
    _assert_nwb_series(export_result(small_result, tmp_path / "nwb", format="nwb"),
                       {"RawFluorescence": f, "Neuropil": fneu})


def test_deconvolved_activity_goes_to_spks_and_nwb(small_result: Path, tmp_path: Path) -> None:
    from model.results import write_deconvolved, write_fluorescence

    k, n_frames = read_result(small_result).traces.shape
    rng = np.random.default_rng(1)
    f, fneu = rng.random((k, n_frames), np.float32), rng.random((k, n_frames), np.float32)
    calcium, spikes = rng.random((k, n_frames), np.float32), rng.random((k, n_frames), np.float32)
    write_fluorescence(small_result, f, fneu, {"coefficient": 0.7})
    write_deconvolved(small_result, calcium, spikes, {"method": "OASIS"})
    plane = export_result(small_result, tmp_path, format="suite2p")
    np.testing.assert_array_equal(np.load(plane / "spks.npy"), spikes)
    _assert_nwb_series(export_result(small_result, tmp_path / "nwb", format="nwb"),
                       {"Calcium": calcium, "Deconvolved": spikes})


def _assert_nwb_series(nwb: Path, expected: dict[str, np.ndarray]) -> None:
    """The NWB file validates and holds each ``(K, T)`` array as a (T, K) Fluorescence series."""
    from pynwb import NWBHDF5IO, validate

    with NWBHDF5IO(str(nwb), mode="r") as io:
        fluorescence = io.read().processing["ophys"]["Fluorescence"]
        for name, values in expected.items():
            np.testing.assert_array_equal(fluorescence[name].data[:], values.T)
    assert validate(path=str(nwb)) == []


def test_tiff_and_csv(small_result: Path, tmp_path: Path) -> None:
    folder = export_result(small_result, tmp_path, format="tiff")
    expected = read_result(small_result)
    with tifffile.TiffFile(folder / "footprints.tif") as tif:
        assert tif.is_imagej
        np.testing.assert_array_equal(tif.asarray(), expected.footprints)
    with (folder / "traces.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["frame", "time_s", "neuron_0", "neuron_1", "neuron_2"]
    assert len(rows) == 51 and float(rows[2][1]) == pytest.approx(1 / 30)
    values = np.array([[float(v) for v in row[2:]] for row in rows[1:]])
    np.testing.assert_allclose(values, expected.traces.T, rtol=1e-5)
    neurons = (folder / "neurons.csv").read_text().splitlines()
    assert neurons[0].startswith("neuron,centroid_y") and len(neurons) == 4
    for name in ("mean_image", "correlation_image"):
        np.testing.assert_array_equal(tifffile.imread(folder / f"{name}.tif"),
                                      expected.images[name])


def test_results_made_before_the_correlation_image_still_export(tmp_path: Path) -> None:
    """A result written before ``correlation_image`` existed lacks the array: it reads, and every
    export leaves that one image out instead of failing."""
    import shutil

    from pynwb import NWBHDF5IO

    result = write_small_result(tmp_path / "old.zarr")
    shutil.rmtree(result / "correlation_image")
    assert "correlation_image" not in read_result(result).images
    plane = export_result(result, tmp_path / "s2p", format="suite2p")
    assert "Vcorr" not in np.load(plane / "ops.npy", allow_pickle=True).item()
    with NWBHDF5IO(str(export_result(result, tmp_path / "nwb", format="nwb")), mode="r") as io:
        assert set(io.read().processing["ophys"]["SummaryImages"].images) == {
            "mean", "max_projection", "attention"}
    assert not (export_result(result, tmp_path / "tif", format="tiff")
                / "correlation_image.tif").exists()


def test_no_neurons(tmp_path: Path) -> None:
    result = write_small_result(tmp_path / "empty.zarr", k=0)
    for fmt in ("nwb", "suite2p", "tiff"):
        assert export_result(result, tmp_path / fmt, format=fmt).exists()
    assert np.load(tmp_path / "suite2p" / "suite2p" / "plane0" / "F.npy").shape == (0, 50)


def test_download_is_built_once_and_cached(small_result: Path) -> None:
    archive = build_download(small_result, "suite2p")
    assert archive == small_result.parent / "exports" / "suite2p.zip"
    with zipfile.ZipFile(archive) as zf:
        assert {"suite2p/plane0/stat.npy", "suite2p/plane0/ops.npy"} <= set(zf.namelist())
    stamp = archive.stat().st_mtime_ns
    assert build_download(small_result, "suite2p").stat().st_mtime_ns == stamp
    assert build_download(small_result, "nwb").name == "result.nwb"
    assert download_path(small_result, "nwb", fs=12.5).name == "result-12.5fps.nwb"
    assert not [p for p in archive.parent.iterdir() if p.name.startswith(".build-")]
    with pytest.raises(ValueError, match="unknown export format"):
        build_download(small_result, "mat")


def test_cli_export(small_result: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from caimx.cli import main

    assert main(["export", str(small_result), "-o", str(tmp_path / "s2p"),
                 "--format", "suite2p"]) == 0
    assert "3 neurons" in capsys.readouterr().out
    assert (tmp_path / "s2p" / "suite2p" / "plane0" / "ops.npy").is_file()
    assert main(["export", str(small_result), "-o", str(tmp_path / "n")]) == 0
    assert (tmp_path / "n" / "movie.nwb").is_file()
    assert main(["export", str(tmp_path / "nothing.zarr"), "-o", str(tmp_path / "x")]) == 2
    assert "not a caimx result" in capsys.readouterr().err


def test_preview_with_denoised_movie(tmp_path: Path) -> None:
    from model.exports.preview import build_preview

    result = write_small_result(tmp_path / "d.zarr", denoised=True)
    preview = build_preview(result, max_points=25)
    assert preview["has_denoised"] and preview["trace_step"] == 2
    expected = read_result(result).traces
    for k, neuron in enumerate(preview["neurons"]):
        blocks = expected[k].reshape(25, 2).mean(axis=1)
        np.testing.assert_allclose(neuron["trace"], blocks, atol=1e-4)
        np.testing.assert_allclose(neuron["denoised_trace"], 2 * blocks, atol=1e-4)
    plain = build_preview(write_small_result(tmp_path / "p.zarr"))
    assert not plain["has_denoised"] and "denoised_trace" not in plain["neurons"][0]
