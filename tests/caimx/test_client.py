"""The Python client and its CLI against a live API and a real worker, as in a notebook."""

from __future__ import annotations

import contextlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from caimx.cli import main
from caimx.client import ApiError, Client
from caimx.settings import Settings
from service.app import create_app


@pytest.fixture(scope="module")
def service_url(settings: Settings, celery_worker: str, serve_live) -> Iterator[str]:
    with serve_live(create_app(settings)) as url:
        yield url


@pytest.mark.slow
def test_notebook_session(service_url: str, api_key: str, movie_tiff: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture,
                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from pynwb import NWBHDF5IO, validate

    monkeypatch.setenv("CAIMX_API_KEY", api_key)  # for the CLI commands below

    api = Client(service_url, api_key=api_key)
    job = api.submit(movie_tiff, progress=False, fps=20.0)  # a tus upload: the server speaks it
    assert job["state"] == "queued" and job["movie"]["name"] == "movie.tif"
    done = api.wait(job, progress=True, poll_s=0.3, timeout_s=300)
    assert done["state"] == "succeeded", done["error"]
    assert "job " in capsys.readouterr().err  # the progress bar

    result = api.result(job)  # Zarr over HTTP, lazy
    k = result["footprints"].shape[0]
    assert result["traces"].shape == (k, 120)
    assert result["mean_image"][:].shape == (48, 48)
    assert dict(result.attrs)["input"]["name"] == "movie.tif"

    nwb = api.download(job, "nwb", tmp_path, progress=False)
    assert nwb.name == "movie.nwb" and validate(path=str(nwb)) == []
    with NWBHDF5IO(str(nwb), mode="r") as io:
        series = io.read().processing["ophys"]["Fluorescence"]["RoiResponseSeries"]
        assert series.data.shape == (120, k) and series.rate == 20.0
    archive = api.download(job, "suite2p", tmp_path, progress=False)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "s2p")
    ops = np.load(tmp_path / "s2p" / "suite2p" / "plane0" / "ops.npy", allow_pickle=True).item()
    assert (ops["Ly"], ops["Lx"], ops["nframes"], ops["fs"]) == (48, 48, 120, 20.0)
    assert any(j["id"] == job["id"] for j in api.list(limit=10))

    # The same from the command line.
    assert main(["status", job["id"], "--url", service_url]) == 0
    assert f"{job['id']}  succeeded" in capsys.readouterr().out
    assert main(["jobs", "--url", service_url, "--json", "--state", "succeeded"]) == 0
    assert job["id"] in [j["id"] for j in json.loads(capsys.readouterr().out)]
    assert main(["fetch", job["id"], "-o", str(tmp_path / "cli"), "--format", "tiff",
                 "--url", service_url, "--quiet"]) == 0  # fmt: skip
    assert zipfile.is_zipfile(tmp_path / "cli" / "movie-tiff.zip")


@pytest.mark.slow
def test_array_multipart_and_cancel(service_url: str, api_key: str, make_movie) -> None:
    api = Client(service_url, api_key=api_key)
    job = api.submit(make_movie(t=60), progress=False)
    assert job["movie"]["name"] == "array.npy" and job["movie"]["shape"] == [60, 48, 48]
    canceled = api.cancel(job)
    assert canceled["state"] == "canceled"
    with pytest.raises(ApiError) as refused:
        api.cancel(job)
    assert refused.value.status == 409 and "canceled" in str(refused.value)


def test_errors_and_missing_files(service_url: str, api_key: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    api = Client(service_url, api_key=api_key)
    with pytest.raises(ApiError) as unknown:
        api.status("0" * 32)
    assert unknown.value.status == 404 and unknown.value.problem["type"].endswith("unknown-job")
    with pytest.raises(FileNotFoundError):
        api.submit(tmp_path / "nothing.tif")
    monkeypatch.setenv("CAIMX_API_KEY", api_key)
    assert main(["status", "0" * 32, "--url", service_url]) == 2
    assert "404" in capsys.readouterr().err
    monkeypatch.setattr("caimx.client.time.sleep", lambda _s: None)  # retries without waiting
    assert main(["jobs", "--url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach the service" in capsys.readouterr().err


def test_retries_on_503_and_429_honour_retry_after() -> None:
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"title": "busy"})
        if len(calls) == 2:
            return httpx.Response(429, json={"title": "slow down"})
        return httpx.Response(200, json={"id": "j", "state": "queued"})

    api = Client("http://caimx.test", transport=httpx.MockTransport(answer), backoff_s=0.01)
    assert api.status("j")["state"] == "queued" and len(calls) == 3
    api = Client("http://caimx.test", transport=httpx.MockTransport(
        lambda r: httpx.Response(503, json={"title": "down", "detail": "no Redis"})),
        retries=2, backoff_s=0.01)  # fmt: skip
    with pytest.raises(ApiError, match="no Redis"):
        api.status("j")


def test_ctrl_c_leaves_the_job_running_and_says_how_to_reattach(
    capsys: pytest.CaptureFixture,
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method != "GET":
            raise AssertionError("waiting must never cancel the job")
        raise KeyboardInterrupt  # the user presses Ctrl-C while the client polls

    api = Client("http://caimx.test", transport=httpx.MockTransport(answer))
    with pytest.raises(KeyboardInterrupt):
        api.wait("abc123", progress=False)
    err = capsys.readouterr().err
    assert "job abc123 keeps running" in err and "caimx status abc123 --wait" in err


def test_watch_submits_each_finished_movie_once(service_url: str, api_key: str, tmp_path: Path,
                                                make_movie) -> None:  # fmt: skip
    import os
    import time

    import tifffile

    from caimx.watch import FolderWatcher

    rig = tmp_path / "rig"
    (rig / "day1").mkdir(parents=True)
    old, fresh = rig / "day1" / "a.tif", rig / "b.tif"
    tifffile.imwrite(old, make_movie(t=40))
    tifffile.imwrite(fresh, make_movie(t=40, seed=2))
    (rig / "notes.txt").write_text("not a movie")
    tifffile.imwrite(rig / "tiny.tif", make_movie(t=3))  # refused by the service, recorded
    past = time.time() - 120
    os.utime(old, (past, past))
    os.utime(rig / "tiny.tif", (past, past))
    api = Client(service_url, api_key=api_key)
    jobs = []
    try:
        watcher = FolderWatcher(rig, api, settle_s=60)
        first = watcher.run_once()
        jobs += [j["id"] for j in first if j["id"]]
        assert sorted(j["file"] for j in first) == ["day1/a.tif", "tiny.tif"]
        assert {j["file"]: j["state"] for j in first}["tiny.tif"] == "refused"
        assert watcher.run_once() == []  # nothing new
        restarted = FolderWatcher(rig, api, settle_s=60)  # state survives a restart
        assert restarted.run_once() == []
        os.utime(fresh, (past, past))
        later = restarted.run_once()
        jobs += [j["id"] for j in later]
        assert [j["file"] for j in later] == ["b.tif"]
        state = json.loads((rig / ".caimx-submitted.json").read_text())
        assert set(state) == {"day1/a.tif", "b.tif", "tiny.tif"}
        assert state["day1/a.tif"]["job"] == first[0]["id"]
        assert state["b.tif"]["upload"]  # the resumable upload's id, recorded as soon as made
        # A crash after submitting but before saving the state does not make a second job.
        crashed = {"b.tif": {"state": "uploading", "upload": state["b.tif"]["upload"]}}
        (rig / ".caimx-submitted.json").write_text(json.dumps(crashed))
        again = FolderWatcher(rig, api, settle_s=60).run_once()
        assert {j["file"]: j["id"] for j in again}["b.tif"] == later[0]["id"]
    finally:
        for job_id in set(jobs):
            with contextlib.suppress(ApiError):
                api.cancel(job_id)


def test_url_and_key_from_env_or_config_file(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    config = tmp_path / "client.toml"
    config.write_text('url = "http://caimx.lab:8000/"\napi_key = "s3cret"\n')
    monkeypatch.setenv("CAIMX_CLIENT_CONFIG", str(config))
    monkeypatch.delenv("CAIMX_URL", raising=False)
    monkeypatch.delenv("CAIMX_API_KEY", raising=False)
    api = Client()
    assert api.url == "http://caimx.lab:8000"
    assert api.http.headers["Authorization"] == "Bearer s3cret"
    monkeypatch.setenv("CAIMX_URL", "http://other:1")
    assert Client().url == "http://other:1"
    assert Client("http://given:2", api_key="k").headers == {"Authorization": "Bearer k"}
    monkeypatch.setenv("CAIMX_CLIENT_CONFIG", str(tmp_path / "missing.toml"))
    monkeypatch.delenv("CAIMX_URL")
    assert Client().url == "http://127.0.0.1:8000" and Client().headers == {}


@pytest.mark.slow
def test_jobs_on_a_url_and_on_shared_storage(service_url: str, api_key: str, settings: Settings,
                                             serve_live, s3_put, make_movie, tmp_path: Path,
                                             capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Nothing is uploaded: the worker reads plane 1 of a ScanImage file from the S3 server, and
    (from the CLI) one dataset of an HDF5 file on the shared storage."""
    import h5py
    from scanimage_files import fastz_movie, fastz_settings, write_scanimage

    movie = make_movie(100, 32, 32, seed=11)
    write_scanimage(tmp_path / "fastz.tif", fastz_movie([movie, movie + np.uint16(500)]),
                    fastz_settings(planes=2, flyback=1, volume_rate=10.0))  # fmt: skip
    url = s3_put("rigs/rig5/fastz_00001.tif", (tmp_path / "fastz.tif").read_bytes())
    api = Client(service_url, api_key=api_key)
    job = api.submit(url, plane=1, motion_correction=False, progress=False)
    assert job["source"] == {"kind": "url", "url": url, "plane": 1}
    assert (job["movie"]["planes"], job["movie"]["plane"]) == (2, 1)
    done = api.wait(job, progress=False, poll_s=0.3, timeout_s=300)
    assert done["state"] == "succeeded", done["error"]
    result = api.result(job)
    assert result["traces"].shape[1] == 100 and result.attrs["input"]["layout"]["plane"] == 1
    assert abs(float(np.mean(result["mean_image"][:])) - (float(movie.mean()) + 500)) < 100
    with pytest.raises(ApiError) as refused:
        api.submit(url.replace("/rigs/", "/elsewhere/"), progress=False)
    assert refused.value.status == 403

    # The reading options travel with uploads too (multipart and tus); these jobs are canceled.
    for resumable in (False, True):
        uploaded = api.submit(tmp_path / "fastz.tif", resumable=resumable, plane=1,
                              progress=False)  # fmt: skip
        assert uploaded["source"]["plane"] == 1 and uploaded["movie"]["plane"] == 1
        api.cancel(uploaded)

    roots = tmp_path / "roots"
    (roots / "rig1").mkdir(parents=True)
    with h5py.File(roots / "rig1" / "session.h5", "w") as f:
        f.create_dataset("imaging/raw", data=movie)
        f.create_dataset("imaging/registered", data=movie + np.uint16(300), chunks=(10, 32, 32))
    monkeypatch.setenv("CAIMX_API_KEY", api_key)
    with serve_live(create_app(settings.model_copy(update={"allowed_roots": [roots]}))) as base:
        assert main(["submit", "--shared", "rig1/session.h5", "--dataset", "imaging/registered",
                     "--params", str(_json(tmp_path, {"motion_correction": False})),
                     "--wait", "--quiet", "--url", base]) == 0  # fmt: skip
        job_id = capsys.readouterr().out.split()[0]
        shared = Client(base, api_key=api_key).status(job_id)
    assert shared["state"] == "succeeded"
    assert shared["source"] == {"kind": "path", "path": "rig1/session.h5",
                                "dataset": "imaging/registered"}  # fmt: skip
    assert shared["movie"]["sha256"]  # hashed by the worker: the file was never uploaded
    assert main(["submit", "rig1/session.h5", "--url", base]) == 2  # not a local file
    assert "no movie at rig1/session.h5" in capsys.readouterr().err


def _json(folder: Path, data: dict) -> Path:
    path = folder / "params.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
