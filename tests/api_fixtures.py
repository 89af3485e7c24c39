"""An API instance per test, with its own data folder and Redis key namespace.

Imported by the conftest files of the folders whose tests talk to an in-process API.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from userkeys import bearer

from caimx.settings import Settings
from service.app import create_app


@pytest.fixture
def api_settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", redis_url=redis_url)


@pytest.fixture
def api(api_settings: Settings, key_prefix: str, redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings, prefix=key_prefix),
                    headers=bearer(redis_url, key_prefix)) as client:
        yield client
