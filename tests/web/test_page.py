"""The page and its files are served by the API itself (no build step, no other server)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from userkeys import bearer

from caimx.settings import Settings
from service.app import create_app


def test_page_and_static_files(tmp_path: Path, redis_url: str, key_prefix: str) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_url)
    with TestClient(create_app(settings, prefix=key_prefix),
                    headers=bearer(redis_url, key_prefix)) as api:
        page = api.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/static/app.js">' in page.text
        script = api.get("/static/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        for path in ("/v1/jobs?limit=50", "/v1/jobs/${job.id}/preview", "/export/${format}"):
            assert path in script.text
        assert api.get("/static/style.css").status_code == 200
        assert api.get("/static/missing.js").status_code == 404
        assert "/" not in api.get("/openapi.json").json()["paths"]
