"""Dockerfile and docker-compose.yml: parsed by Compose where it exists, shape-checked always."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _compose_works() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _compose_works(), reason="docker CLI with the compose plugin not found")
def test_docker_compose_config_parses() -> None:
    done = subprocess.run(["docker", "compose", "-f", "docker-compose.yml", "config", "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_compose_has_redis_api_and_a_gpu_worker_sharing_storage() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {n for n, s in services.items() if not s.get("profiles")} == {"redis", "api", "worker"}
    assert services["api"]["build"]["target"] == "api"
    assert services["worker"]["build"]["target"] == "worker"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for name in ("api", "worker"):
        assert "caimx-data:/data" in services[name]["volumes"]
        assert services[name]["environment"]["CAIMX_REDIS_URL"].startswith("redis://redis:")


def test_dockerfile_targets() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "AS api" in text and "AS worker" in text
    assert "tensorflow[and-cuda]" in text


def test_flower_is_optional() -> None:
    flower = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["flower"]
    assert flower["profiles"] == ["monitoring"]
    assert flower["environment"]["CELERY_BROKER_URL"].startswith("redis://redis:")
