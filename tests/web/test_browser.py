"""The web page in headless Chromium: upload, follow the job, see contours, click, see the trace.

Needs Debian's ``chromium`` (``/usr/bin/chromium``; ``.ci/run`` installs it) and the ``playwright``
package (dev extra). Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="no /usr/bin/chromium (apt-get install -y chromium; .ci/run does)"),
]
playwright = pytest.importorskip("playwright.sync_api",
                                 reason="playwright is not installed (pip install -e '.[dev]')")


@pytest.fixture
def browser():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


def test_upload_follow_and_inspect_a_result(browser, web_server: str, movie_tiff: Path,
                                            artifacts: Path, api_key: str) -> None:  # fmt: skip
    auth = {"Authorization": f"Bearer {api_key}"}
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script(f"localStorage.setItem('caimx-api-key', {api_key!r})")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(web_server + "/")
    assert page.title() == "caimx"

    page.set_input_files("#upload-file", str(movie_tiff))
    page.check("#upload-denoised")
    page.click("#upload-button")
    playwright.expect(page.locator("#upload-status")).to_contain_text("queued as", timeout=30_000)
    job_short = page.locator("#upload-status").inner_text().split()[-1]
    row = page.locator(f"#jobs tbody tr:has(code:text-is('{job_short}'))")
    playwright.expect(row).to_have_count(1, timeout=10_000)
    page.screenshot(path=str(artifacts / "browser-1-queued.png"), full_page=True)
    playwright.expect(row).to_have_attribute("data-state", "succeeded", timeout=300_000)
    job_id = row.get_attribute("data-job-id")

    row.click()
    contours = page.locator("#image polygon.contour")
    playwright.expect(contours.first).to_be_visible(timeout=30_000)
    preview = httpx.get(f"{web_server}/v1/jobs/{job_id}/preview", headers=auth).json()
    assert contours.count() == sum(len(n["contours"]) for n in preview["neurons"]) > 0
    assert preview["has_denoised"]
    page.screenshot(path=str(artifacts / "browser-2-result.png"), full_page=True)
    background = page.locator("#image image")
    mean_href = background.get_attribute("href")
    playwright.expect(page.locator("#background option")).to_have_text(
        ["mean image", "correlation image", "max projection"])
    page.select_option("#background", "correlation")
    assert background.get_attribute("href") == (
        "data:image/png;base64," + preview["images"]["correlation"]["png"]) != mean_href
    page.select_option("#background", "mean")
    assert background.get_attribute("href") == mean_href

    top = contours.last  # drawn last, so on top where footprints overlap
    neuron = top.get_attribute("data-neuron")
    top.click()
    trace = page.locator(f"#trace polyline[data-neuron='{neuron}']")
    playwright.expect(trace).to_be_visible()
    n_points = len(trace.get_attribute("points").split())
    assert n_points == len(preview["neurons"][int(neuron)]["trace"]) > 1
    playwright.expect(page.locator("#trace polyline.denoised")).to_be_visible()
    playwright.expect(page.locator("#trace-title")).to_have_text(f"Neuron {neuron}")
    playwright.expect(top).to_have_class("contour selected")
    page.screenshot(path=str(artifacts / "browser-3-trace.png"), full_page=True)

    href = page.locator("#download-suite2p").get_attribute("href")
    assert href == f"/v1/jobs/{job_id}/export/suite2p"
    with page.expect_download() as download_info:
        page.click("#download-nwb")
    download = download_info.value
    saved = artifacts / "browser-download.nwb"
    download.save_as(saved)
    assert download.suggested_filename == "movie.nwb" and saved.stat().st_size > 1000
    assert errors == []

    metrics = httpx.get(f"{web_server}/metrics", headers=auth).text
    found = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples
             if not s.labels}  # fmt: skip
    assert found["caimx_workers"] >= 1 and found["caimx_frames_processed_total"] > 0
    shutil.copy(saved, artifacts / "last-download.nwb")
