"""The real SIMA two-photon recording through the reader and `caimx process`.

The movie (20 frames, 128 x 256, uint16) is shorter than one model window, so it exercises the
documented temporal padding rule; two hand-drawn ROIs exist but the field holds more cells, so this
checks that a real microscope file goes through without errors, not accuracy.

The movie is not shipped with caimx: it is the SIMA project's example data (Losonczy lab,
https://github.com/losonczylab/sima), licensed GPLv2+, and caimx is MIT. The tests read it from
``shared/data/sima-example/movie.tif`` beside the checkout, or from ``CAIMX_SIMA_MOVIE``; without
it they skip (with ``CAIMX_SIMA_MOVIE`` set to a missing file they fail).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from caimx.cli import main
from model.io import open_movie
from model.results import read_result

REPO = Path(__file__).resolve().parents[2]
SIMA_OVERRIDE = os.environ.get("CAIMX_SIMA_MOVIE")
SIMA = Path(SIMA_OVERRIDE or REPO.parent / "shared/data/sima-example/movie.tif")
MODEL_DIR = REPO / "model" / "zoo"


@pytest.fixture(scope="module")
def sima_movie() -> Path:
    if not SIMA.is_file():
        if SIMA_OVERRIDE:
            pytest.fail(f"CAIMX_SIMA_MOVIE names a missing file: {SIMA}")
        pytest.skip(f"the only real-microscope test file, the SIMA example movie (SIMA project "
                    f"example data, GPLv2+), is not shipped with caimx (MIT) for licence reasons; "
                    f"it was looked for at {SIMA} (set CAIMX_SIMA_MOVIE to a copy)")
    return SIMA


def test_reader_sees_the_real_movie(sima_movie: Path) -> None:
    with open_movie(sima_movie) as movie:
        assert movie.shape == (20, 128, 256)
        assert movie.dtype == np.uint16
        block = movie.read(5, 7, y=slice(10, 20), x=slice(100, 130))
    assert block.shape == (2, 10, 30)
    assert np.array_equal(block, tifffile.imread(sima_movie)[5:7, 10:20, 100:130])


@pytest.mark.slow
def test_caimx_process_runs_on_a_crop_of_the_real_movie(sima_movie: Path, tmp_path: Path) -> None:
    crop = tifffile.imread(sima_movie)[:, 32:88, 64:120]  # 20 x 56 x 56: four tiles, one window
    path = tmp_path / "sima_crop.tif"
    tifffile.imwrite(path, crop)
    out = tmp_path / "result.zarr"
    code = main(["process", str(path), "-o", str(out), "--models-dir", str(MODEL_DIR), "--quiet"])
    assert code == 0
    result = read_result(out)
    k = result.footprints.shape[0]
    assert result.footprints.shape == (k, 56, 56)
    assert result.traces.shape == (k, 20)  # every frame, first and last included
    assert np.all(np.isfinite(result.traces))
    assert result.images["mean_image"].shape == (56, 56)


@pytest.mark.slow
def test_binned_to_the_model_frame_rate_the_real_movie_keeps_a_trace_per_frame(
        sima_movie: Path, tmp_path: Path) -> None:
    import json
    import shutil

    models = tmp_path / "models"
    shutil.copytree(MODEL_DIR / "caimx-mini", models / "caimx-mini")  # the default model
    card_path = models / "caimx-mini" / "model_card.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card_path.write_text(json.dumps({**card, "frame_rate_hz": 15.0}), encoding="utf-8")
    crop = tifffile.imread(sima_movie)[:, 32:88, 64:120]
    path = tmp_path / "sima_crop.tif"
    tifffile.imwrite(path, crop)
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"plan": {"min_frames": 8}}), encoding="utf-8")
    out = tmp_path / "result.zarr"
    code = main(["process", str(path), "-o", str(out), "--models-dir", str(models), "--quiet",
                 "--fps", "30", "--match-frame-rate", "--params", str(params)])
    assert code == 0
    result = read_result(out)
    k = result.footprints.shape[0]
    assert result.traces.shape == (k, 20)  # 10 bins of 2 frames, back on all 20 frames
    assert np.all(np.isfinite(result.traces))
    assert result.attrs["resample"]["temporal_bin"] == 2
    assert result.attrs["resample"]["network_frame_rate_hz"] == 15.0
    assert result.attrs["parameters"]["resample"]["match_frame_rate"] is True
    assert result.attrs["plan"]["network_shape"] == [10, 56, 56]
