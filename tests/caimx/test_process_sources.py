"""`caimx process` on a movie behind an s3:// URL (the session's S3 server), on one plane of a
ScanImage fast-z file and on one dataset of an HDF5 file: tiny runs with the shipped model
(one 100-frame window of one 32 x 32 tile)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from scanimage_files import fastz_movie, fastz_settings, write_scanimage

from caimx.cli import main
from caimx.settings import get_settings
from model.results import read_result

MODEL_DIR = Path(__file__).resolve().parents[2] / "model" / "zoo"
pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "deepcaimx-mini" / "saved_model").is_dir(),
    reason="the shipped deepcaimx-mini SavedModel is not installed")
FAST = ["--models-dir", str(MODEL_DIR), "--no-motion-correction", "--quiet"]


@pytest.fixture
def remote_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``CAIMX_REMOTE_OPTIONS`` pointing at the session's S3 server (credentials: the test
    values :func:`s3_server` put in the environment); no allowed prefixes are needed offline."""
    monkeypatch.setenv("CAIMX_REMOTE_OPTIONS", json.dumps({"s3": {"endpoint_url": s3_server}}))
    monkeypatch.delenv("CAIMX_REMOTE_ALLOWED_PREFIXES", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_process_a_movie_behind_an_s3_url(remote_env, s3_put, make_movie, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    movie = make_movie(100, 32, 32, seed=7)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, movie, imagej=True, metadata={"axes": "TYX", "fps": 20})
    url = s3_put("offline/mouse4.tif", buffer.getvalue())
    out = tmp_path / "result.zarr"
    assert main(["process", url, "-o", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "neurons in mouse4.tif (100 frames" in printed
    assert "chunks: network " in printed and "waiting for reads " in printed
    result = read_result(out)
    assert result.traces.shape[1] == 100 and result.footprints.shape[1:] == (32, 32)
    assert result.attrs["input"]["name"] == "mouse4.tif"
    assert result.attrs["input"]["fps"] == 20.0
    assert result.attrs["input"]["sha256"] == ""  # hashing it would download it once more
    assert abs(float(np.mean(result.images["mean_image"])) - float(movie.mean())) < 5

    assert main(["process", url.replace("mouse4", "none"), "-o", str(tmp_path / "x.zarr"),
                 *FAST]) == 2  # fmt: skip
    assert "there is no 's3://" in capsys.readouterr().err


def test_process_one_plane_of_a_scanimage_file(make_movie, tmp_path: Path) -> None:
    movie = make_movie(100, 32, 32, seed=8)
    planes = [movie + np.uint16(500 * z) for z in range(3)]
    path = write_scanimage(tmp_path / "fastz_00001.tif", fastz_movie(planes),
                           fastz_settings(planes=3, flyback=1, volume_rate=10.0))  # fmt: skip
    out = tmp_path / "plane1.zarr"
    assert main(["process", str(path), "-o", str(out), "--plane", "1", *FAST]) == 0
    result = read_result(out)
    assert result.attrs["input"]["fps"] == 10.0 and result.traces.shape[1] == 100
    assert result.attrs["input"]["layout"] == {"planes": 3, "plane": 1, "channels": 1,
                                               "channel": 0}  # fmt: skip
    mean = float(np.mean(result.images["mean_image"]))
    assert abs(mean - float(planes[1].mean())) < 100, mean  # planes are 500 apart


def test_a_missing_plane_and_a_dataset(make_movie, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    movie = make_movie(100, 32, 32, seed=9)
    path = write_scanimage(tmp_path / "fastz_00001.tif", fastz_movie([movie, movie]),
                           fastz_settings(planes=2, flyback=1))  # fmt: skip
    assert main(["process", str(path), "-o", str(tmp_path / "p.zarr"), "--plane", "2",
                 *FAST]) == 2  # fmt: skip
    assert "there is no plane 2" in capsys.readouterr().err

    with h5py.File(tmp_path / "session.h5", "w") as f:
        f.create_dataset("imaging/raw", data=movie)
        f.create_dataset("imaging/registered", data=movie[:, ::-1])
    out = tmp_path / "h5.zarr"
    args = ["process", str(tmp_path / "session.h5"), "-o", str(out), *FAST]
    assert main(args) == 2  # two 3-D datasets: which one?
    assert "imaging/registered" in capsys.readouterr().err
    assert main([*args, "--dataset", "imaging/registered"]) == 0
    mean = read_result(out).images["mean_image"].ravel()
    flipped, raw = movie[:, ::-1].mean(axis=0).ravel(), movie.mean(axis=0).ravel()
    assert np.corrcoef(mean, flipped)[0, 1] > 0.9 > np.corrcoef(mean, raw)[0, 1]
