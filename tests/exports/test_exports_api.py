"""The export and preview routes on a real Redis job store and a real result group."""

from __future__ import annotations

import base64
import io
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from caimx.jobs import JobStore


def test_nwb_download(api: TestClient, finished_job: str, tmp_path) -> None:
    from pynwb import NWBHDF5IO, validate

    response = api.get(f"/v1/jobs/{finished_job}/export/nwb")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-nwb"
    assert 'filename="movie.nwb"' in response.headers["content-disposition"]
    path = tmp_path / "download.nwb"
    path.write_bytes(response.content)
    assert validate(path=str(path)) == []
    with NWBHDF5IO(str(path), mode="r") as nwb_io:
        series = nwb_io.read().processing["ophys"]["Fluorescence"]["RoiResponseSeries"]
        assert series.data.shape == (50, 3) and series.rate == 30.0
    again = api.get(f"/v1/jobs/{finished_job}/export/nwb?fs=10")
    path.write_bytes(again.content)
    with NWBHDF5IO(str(path), mode="r") as nwb_io:
        assert nwb_io.read().processing["ophys"]["Fluorescence"]["RoiResponseSeries"].rate == 10


@pytest.mark.parametrize(("fmt", "member"), [("suite2p", "suite2p/plane0/stat.npy"),
                                             ("tiff", "footprints.tif")])
def test_zip_downloads(api: TestClient, finished_job: str, fmt: str, member: str) -> None:
    response = api.get(f"/v1/jobs/{finished_job}/export/{fmt}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert f'filename="movie-{fmt}.zip"' in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        assert member in zf.namelist()
        if fmt == "suite2p":
            ops = np.load(io.BytesIO(zf.read("suite2p/plane0/ops.npy")), allow_pickle=True).item()
            assert (ops["Ly"], ops["Lx"], ops["fs"]) == (40, 36, 30.0)


def test_preview(api: TestClient, finished_job: str) -> None:
    response = api.get(f"/v1/jobs/{finished_job}/preview?max_points=20")
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["shape"] == [50, 40, 36] and preview["fs"] == 30.0
    image = Image.open(io.BytesIO(base64.b64decode(preview["image"]["png"])))
    assert image.size == (36, 40) and preview["image"]["scale"] == 1.0
    assert list(preview["images"]) == ["mean", "correlation", "max"]  # page backgrounds
    assert preview["images"]["mean"] == preview["image"]
    correlation = Image.open(io.BytesIO(base64.b64decode(preview["images"]["correlation"]["png"])))
    assert correlation.size == (36, 40) and correlation.tobytes() != image.tobytes()
    assert len(preview["neurons"]) == 3 and preview["trace_step"] == 3
    first = preview["neurons"][0]
    assert len(first["trace"]) == 17
    (polygon,) = first["contours"]
    xs, ys = np.array(polygon).T
    assert polygon[0] == polygon[-1]  # closed
    assert xs.min() == pytest.approx(6 - 3, abs=0.6) and ys.max() == pytest.approx(8 + 3, abs=0.6)
    assert api.get(f"/v1/jobs/{finished_job}/preview?max_points=20").json() == preview


def test_not_finished_and_unknown(api: TestClient, job_store_for_api: JobStore) -> None:
    job_id = job_store_for_api.new_id()
    job_store_for_api.create(job_id, model="m", input_name="a.tif", input_path="/x",
                             owner="tester")
    for path in (f"/v1/jobs/{job_id}/export/nwb", f"/v1/jobs/{job_id}/preview"):
        response = api.get(path)
        assert response.status_code == 409
        assert response.json()["type"] == "urn:caimx:problem:result-not-ready"
    assert api.get("/v1/jobs/nope/export/nwb").status_code == 404
    response = api.get(f"/v1/jobs/{job_id}/export/matlab")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
