"""Schemathesis against the live OpenAPI schema of a running API, with a valid key: no 5xx.

The API runs in uvicorn on 127.0.0.1 (a key prefix of its own, real Redis, an allowed root with a
movie in it); every operation gets a bounded number of generated requests.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import schemathesis
import tifffile
from hypothesis import HealthCheck, given, settings
from userkeys import make_user

from caimx.settings import Settings
from service.app import create_app

pytestmark = pytest.mark.slow
MAX_EXAMPLES = 10


@schemathesis.serializer("application/offset+octet-stream")
def _octets(ctx, value) -> bytes:
    """tus PATCH bodies: raw bytes (generated values are bytes or text)."""
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture(scope="module")
def live_api(redis_url: str, serve_live,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:  # fmt: skip
    root = tmp_path_factory.mktemp("fuzz-root")
    movie = np.random.default_rng(0).poisson(20, (120, 48, 48)).astype(np.uint16)
    tifffile.imwrite(root / "movie.tif", movie)
    prefix = "caimx-fuzz"
    key = make_user(redis_url, prefix, "fuzzer")
    api_settings = Settings(data_dir=tmp_path_factory.mktemp("fuzz-data"), redis_url=redis_url,
                            allowed_roots=[root])  # fmt: skip
    with serve_live(create_app(api_settings, prefix=prefix)) as base:
        yield base, key


@pytest.fixture(scope="module")
def api_schema(live_api: tuple[str, str]):
    base, _ = live_api
    return schemathesis.openapi.from_url(f"{base}/openapi.json")


def test_no_server_errors(api_schema, live_api: tuple[str, str]) -> None:
    """Each operation of the live schema, ``max_examples`` generated requests: none is a 5xx."""
    base, key = live_api
    failures: list[str] = []
    calls: list[int] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def check(case) -> None:
            response = case.call(base_url=base, headers={"Authorization": f"Bearer {key}"},
                                 timeout=30)  # fmt: skip
            calls.append(response.status_code)
            if response.status_code >= 500 and case.path != "/readyz":  # 503: no worker here
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} "
                                f"{response.text[:300]}")  # fmt: skip

        check()
    assert failures == []
    assert len(calls) >= 5 * len(operations)
    assert any(400 <= status < 500 for status in calls) and any(s < 300 for s in calls)


def test_the_schema_names_the_bearer_scheme(api_schema) -> None:
    raw = api_schema.raw_schema
    assert raw["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
