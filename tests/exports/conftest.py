"""Fixtures of the export tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from small_result import write_small_result


@pytest.fixture
def small_result(tmp_path: Path) -> Path:
    return write_small_result(tmp_path / "job" / "result.zarr")
