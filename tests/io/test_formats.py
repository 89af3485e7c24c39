"""Every movie format on files written by the matching library: shape, dtype, fps, lazy reads."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from scipy.io import savemat

from model.io import MovieFormatError, open_movie, sniff_format


@pytest.fixture
def frames() -> np.ndarray:
    return (np.arange(20 * 12 * 16, dtype=np.uint32) % 60_000).astype(np.uint16).reshape(20, 12, 16)


def check(path: Path, frames: np.ndarray, *, kind: str, rate: float | None, **options) -> None:
    assert sniff_format(path) == kind
    with open_movie(path, **options) as movie:
        assert movie.shape == frames.shape
        assert movie.dtype == frames.dtype
        assert movie.fps == (pytest.approx(rate) if rate else None)
        np.testing.assert_array_equal(movie.read(0, len(frames)), frames)
        part = movie.read(7, 13, y=slice(2, 9), x=slice(3, None))
        np.testing.assert_array_equal(part, frames[7:13, 2:9, 3:])


def test_imagej_hyperstack_channel(tmp_path: Path, frames: np.ndarray) -> None:
    stack = np.stack([frames, frames + 1], axis=1)  # (T, C, Y, X)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TCYX", "fps": 7.5})
    check(path, frames + 1, kind="tiff", rate=7.5, channel=1)
    with pytest.raises(MovieFormatError, match="'channel'"):
        open_movie(path)


def test_imagej_hyperstack_plane_compressed(tmp_path: Path, frames: np.ndarray) -> None:
    stack = np.stack([frames, frames + 2, frames + 4], axis=1)  # (T, Z, Y, X)
    path = tmp_path / "planes.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TZYX"}, compression="zlib")
    check(path, frames + 4, kind="tiff", rate=None, plane=2)


def _scanimage_like(path: Path, pages: list[np.ndarray], channels: str, more: str = "") -> None:
    """Pages as ScanImage writes them: its settings in every page's ``Software`` tag, per-frame
    values in the description, one page at a time (not one contiguous block)."""
    software = (f"SI.hRoiManager.scanFrameRate = 30.02\nSI.hChannels.channelSave = {channels}\n"
                + more)  # fmt: skip
    with tifffile.TiffWriter(path) as tif:
        for i, page in enumerate(pages):
            tif.write(page, software=software, metadata=None, contiguous=False,
                      description=f"frameNumbers = {i + 1}\nframeTimestamps_sec = {i / 30.02}")


def test_scanimage_like_interleaved_channels(tmp_path: Path, frames: np.ndarray) -> None:
    path = tmp_path / "si_00001.tif"
    pages = [p for f in frames for p in (f, f // 2)]  # channel 1, channel 2, frame after frame
    _scanimage_like(path, pages, "[1;2]")
    check(path, frames // 2, kind="tiff", rate=30.02, channel=1)
    check(path, frames, kind="tiff", rate=30.02, channel=0)


def _volumes(t: int, planes: int, flyback: int, channels: int) -> np.ndarray:
    """``(t, planes + flyback, channels, 10, 14)`` pages whose pixels tell where they belong:
    1000 * plane + 100 * channel + frame, plus a gradient so rows and columns differ."""
    yy, xx = np.mgrid[:10, :14]
    values = np.empty((t, planes + flyback, channels, 10, 14), np.uint16)
    for i in range(t):
        for z in range(planes + flyback):
            for c in range(channels):
                base = 9000 if z >= planes else 1000 * z + 100 * c + i  # fly-back: 9000
                values[i, z, c] = base + yy * 3 + xx * 5
    return values


SI_2020 = ("SI.hRoiManager.scanVolumeRate = 7.5\nSI.hFastZ.enable = true\n"
           "SI.hStackManager.enable = true\nSI.hStackManager.numSlices = 3\n"
           "SI.hStackManager.actualNumSlices = 3\nSI.hStackManager.framesPerSlice = 1\n"
           "SI.hStackManager.numFramesPerVolume = 3\n"
           "SI.hStackManager.numFramesPerVolumeWithFlyback = 4\n")  # fmt: skip


def test_scanimage_planes_and_channels_interleaved(tmp_path: Path) -> None:
    """3 planes, 1 fly-back frame and 2 channels per volume, page after page; the acquisition
    stopped 5 pages into volume 21. Each plane and channel reads as its own (T, H, W) movie."""
    volumes = _volumes(21, planes=3, flyback=1, channels=2)
    pages = list(volumes.reshape(-1, 10, 14))[: 20 * 8 + 5]
    path = tmp_path / "fastz_00001.tif"
    _scanimage_like(path, pages, "[1;2]", SI_2020)
    for plane in range(3):
        for channel in range(2):
            check(path, volumes[:20, plane, channel], kind="tiff", rate=7.5, plane=plane,
                  channel=channel)  # fmt: skip
    with open_movie(path, channel=1) as movie:  # plane 0 unless asked
        assert movie.shape == (20, 10, 14)
        assert movie.layout == {"planes": 3, "plane": 0, "channels": 2, "channel": 1}
        assert int(movie.read(4, 5)[0, 0, 0]) == 100 + 4
    with pytest.raises(MovieFormatError, match="'channel'"):
        open_movie(path)  # two channels: one must be chosen
    with pytest.raises(MovieFormatError, match=r"has 3 planes \(numbered 0 to 2\); there is no "
                                               r"plane 3"):  # the fly-back frame is no plane
        open_movie(path, plane=3, channel=0)
    with pytest.raises(MovieFormatError, match="there is no channel 2"):
        open_movie(path, channel=2)


def test_scanimage_older_fastz_keys_and_a_series_of_files(tmp_path: Path) -> None:
    """ScanImage 2016-2019 keys (hFastZ, numDiscardFlybackFrames), one channel, the recording
    split over two files; no volume rate: the frame rate divided by the frames per volume."""
    volumes = _volumes(24, planes=2, flyback=1, channels=1)
    older = ("scanimage.SI.hFastZ.enable = 1\nscanimage.SI.hFastZ.discardFlybackFrames = 1\n"
             "scanimage.SI.hFastZ.numDiscardFlybackFrames = 1\n"
             "scanimage.SI.hStackManager.numSlices = 2\n")  # fmt: skip
    folder = tmp_path / "session"
    folder.mkdir()
    pages = list(volumes.reshape(-1, 10, 14))
    _scanimage_like(folder / "rec_00001.tif", pages[:30], "1", older)
    _scanimage_like(folder / "rec_00002.tif", pages[30:], "1", older)
    check(folder, volumes[:, 1, 0], kind="tiff-series", rate=30.02 / 3, plane=1)
    with open_movie(folder) as movie:
        assert movie.layout == {"planes": 2, "plane": 0, "channels": 1, "channel": 0}
    with pytest.raises(MovieFormatError, match="there is no plane 2"):
        open_movie(folder, plane=2)


def test_scanimage_slices_without_fast_z_are_one_plane(tmp_path: Path, frames: np.ndarray) -> None:
    """``numSlices`` left at 4 from an earlier stack, but neither fast-z nor the stack is on."""
    off = ("SI.hFastZ.enable = false\nSI.hStackManager.enable = false\n"
           "SI.hStackManager.numSlices = 4\n")  # fmt: skip
    path = tmp_path / "plain_00001.tif"
    _scanimage_like(path, list(frames), "1", off)
    check(path, frames, kind="tiff", rate=30.02)
    with open_movie(path) as movie:
        assert movie.layout["planes"] == 1
    with pytest.raises(MovieFormatError, match=r"has 1 plane \(.*there is no plane 1"):
        open_movie(path, plane=1)


def test_a_folder_of_tiffs_is_one_movie(tmp_path: Path, frames: np.ndarray) -> None:
    folder = tmp_path / "session"
    folder.mkdir()
    for name, part in (("rec_1.tif", frames[:8]), ("rec_2.tif", frames[8:15]),
                       ("rec_10.tif", frames[15:])):  # natural order: 1, 2, 10
        tifffile.imwrite(folder / name, part, imagej=True, metadata={"axes": "TYX", "fps": 20})
    check(folder, frames, kind="tiff-series", rate=20.0)


def test_tiff_series_must_match(tmp_path: Path, frames: np.ndarray) -> None:
    tifffile.imwrite(tmp_path / "a.tif", frames)
    tifffile.imwrite(tmp_path / "b.tif", frames[:, :10])
    with pytest.raises(MovieFormatError, match="must match"):
        open_movie(tmp_path)


def test_hdf5_dataset_path(tmp_path: Path, frames: np.ndarray) -> None:
    path = tmp_path / "movie.h5"
    with h5py.File(path, "w") as f:
        data = f.create_dataset("imaging/mov", data=frames, chunks=(4, 12, 16))
        data.attrs["fps"] = 15.0
        f.create_dataset("other", data=np.zeros((3, 4, 5)))
    check(path, frames, kind="hdf5", rate=15.0, dataset="/imaging/mov")
    with pytest.raises(MovieFormatError, match="'dataset'"):
        open_movie(path)
    with pytest.raises(MovieFormatError, match="no dataset 'nope'"):
        open_movie(path, dataset="nope")


def _nwb_session(path: Path, series: dict[str, dict]) -> Path:
    """An NWB file written by pynwb with one ``TwoPhotonSeries`` per entry of ``series``."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ophys import OpticalChannel, TwoPhotonSeries

    nwb = NWBFile(session_description="caimx test", identifier="caimx-1",
                  session_start_time=datetime(2026, 11, 20, tzinfo=UTC))
    device = nwb.create_device(name="rig3")
    channel = OpticalChannel(name="green", description="GCaMP", emission_lambda=525.0)
    plane = nwb.create_imaging_plane(
        name="plane1", optical_channel=channel, device=device,
        description="L2/3", excitation_lambda=920.0, indicator="GCaMP6s", location="V1",
        imaging_rate=30.0)  # fmt: skip
    for name, fields in series.items():
        nwb.add_acquisition(TwoPhotonSeries(name=name, imaging_plane=plane, rate=30.0,
                                            unit="n.a.", **fields))  # fmt: skip
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def test_nwb_two_photon_series_is_stored_x_y(tmp_path: Path, frames: np.ndarray) -> None:
    """NWB stores (frame, x, y): a 12-row, 16-column movie is data of shape (20, 16, 12), and
    reads back as (20, 12, 16) with its rows and columns where they were."""
    assert frames.shape == (20, 12, 16)
    path = _nwb_session(tmp_path / "session.nwb", {
        "TwoPhotonSeries": {"data": frames.transpose(0, 2, 1), "dimension": [16, 12]}})
    with h5py.File(path) as f:
        assert f["acquisition/TwoPhotonSeries/data"].shape == (20, 16, 12)
    check(path, frames, kind="nwb", rate=30.0)
    check(path, frames, kind="nwb", rate=30.0, dataset="TwoPhotonSeries")
    with open_movie(path) as movie:
        assert movie.shape == (20, 12, 16) and not movie.stored_yx
        np.testing.assert_array_equal(movie.read(3, 4)[0, 5], frames[3, 5])  # row 5


def test_nwb_stored_against_the_schema(tmp_path: Path, frames: np.ndarray) -> None:
    """A writer that stored (frame, y, x) but said so in ``dimension`` ([width, height]) is read
    as stored; without ``dimension`` the schema's order is assumed."""
    path = _nwb_session(tmp_path / "yx.nwb", {
        "yx": {"data": frames, "dimension": [16, 12]}, "plain": {"data": frames}})
    check(path, frames, kind="nwb", rate=30.0, dataset="yx")
    check(path, frames.transpose(0, 2, 1), kind="nwb", rate=30.0, dataset="plain")
    with pytest.raises(MovieFormatError, match="'dataset'"):
        open_movie(path)


def test_zarr_array_in_group(tmp_path: Path, frames: np.ndarray) -> None:
    path = tmp_path / "movie.zarr"
    group = zarr.open_group(path, mode="w")
    array = group.create_array("mov", shape=frames.shape, dtype=frames.dtype, chunks=(5, 12, 16))
    array[:] = frames
    group.create_array("mean", shape=(12, 16), dtype="f4")
    check(path, frames, kind="zarr", rate=12.0, array="mov", fps=12.0)
    check(path, frames, kind="zarr", rate=None, dataset="mov")


def test_npy_with_fps_option(tmp_path: Path, frames: np.ndarray) -> None:
    path = tmp_path / "movie.npy"
    np.save(path, frames)
    check(path, frames, kind="npy", rate=9.0, fps=9.0)
    check(path, frames, kind="npy", rate=None)


def write_sbx(path: Path, data: list[np.ndarray], **info) -> None:
    """Scanbox layout: uint16 (T, rows, cols, channels) in C order, stored as 65535 - value."""
    raw = np.stack(data, axis=-1)
    (np.uint16(65535) - raw).astype("<u2").tofile(path)
    savemat(path.with_suffix(".mat"), {"info": {"sz": np.array(raw.shape[1:3], float), **info}})


def test_scanbox_one_channel(tmp_path: Path, frames: np.ndarray) -> None:
    path = tmp_path / "mouse12_000_001.sbx"
    write_sbx(path, [frames], channels=2.0, resfreq=7930.0, scanmode=1.0)
    check(path, frames, kind="sbx", rate=7930.0 / 12)


def test_scanbox_two_channels_bidirectional(tmp_path: Path, frames: np.ndarray) -> None:
    path = tmp_path / "two.sbx"
    write_sbx(path, [frames, frames // 3], chan={"nchan": 2.0}, resfreq=7930.0, scanmode=0.0)
    check(path, frames // 3, kind="sbx", rate=2 * 7930.0 / 12, channel=1)
    check(path.with_suffix(".mat"), frames, kind="sbx", rate=2 * 7930.0 / 12)


def test_scanbox_needs_its_info_file(tmp_path: Path, frames: np.ndarray) -> None:
    path = tmp_path / "alone.sbx"
    write_sbx(path, [frames], channels=2.0)
    path.with_suffix(".mat").unlink()
    with pytest.raises(MovieFormatError, match="info file"):
        open_movie(path)
