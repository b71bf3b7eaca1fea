"""The ``/ui`` status page in a real headless Chromium: it shows the three nodes and their partitions,
and follows a reshape to more partitions without a reload."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.environment import cannot_run

from .conftest import ClusterFactory

CHROMIUM = "/usr/bin/chromium"
# The README's picture; a test run writes it only when asked, so `make test` leaves the tree clean.
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "status-page.png"
UPDATE_SCREENSHOT_ENV = "KVCLUSTER_UPDATE_SCREENSHOT"


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    if shutil.which(CHROMIUM) is None:
        cannot_run(f"{CHROMIUM} is not installed (scripts/setup-system.sh installs the chromium package)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        cannot_run("the playwright package is not installed (pip install -e '.[dev]')")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            await chromium.close()


async def test_page_shows_nodes_partitions_and_follows_a_reshape(
    make_cluster: ClusterFactory, browser: object, tmp_path: Path
) -> None:
    from playwright.async_api import Browser

    assert isinstance(browser, Browser)
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    url = cluster.urls()[1]
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{url}/ui")

    await page.wait_for_function(
        "document.querySelectorAll('#nodes tr.node').length === 3"
        " && document.querySelectorAll('#partitions tr.partition').length === 2"
        " && [...document.querySelectorAll('#partitions tr.partition td:nth-child(4)')]"
        "     .every(td => td.textContent !== '-')",
        timeout=20_000,
    )
    nodes = await page.locator("#nodes tr.node").evaluate_all("rows => rows.map(r => r.dataset.node)")
    assert nodes == ["1", "2", "3"]
    node_urls = await page.locator("#nodes tr.node td:nth-child(2)").all_inner_texts()
    assert node_urls == cluster.urls()
    partitions = await page.locator("#partitions tr.partition").evaluate_all(
        "rows => rows.map(r => r.dataset.partition)"
    )
    assert len(partitions) == 2
    voters = await page.locator("#partitions tr.partition td:nth-child(5)").all_inner_texts()
    assert voters == ["1, 2, 3", "1, 2, 3"]
    assert await page.locator("#ring > div").count() == 2
    assert "served by node 2" in await page.inner_text("#served-by")
    assert await page.inner_text("#reshape") == "idle"

    # Reshape to 4 partitions through the admin API; the open page must pick it up by itself.
    await page.evaluate("window.__loadedOnce = 'same page'")
    async with aiohttp.ClientSession() as session:
        body = {"nodes": [1, 2, 3], "partitions": 4, "replicas": 3}
        async with session.post(f"{cluster.urls()[0]}/v1/admin/reshape", json=body) as resp:
            assert resp.status == 202, await resp.text()
    await page.wait_for_function(
        "document.getElementById('reshape').textContent.startsWith('running')"
        " || document.querySelectorAll('#partitions tr.partition').length === 4",
        timeout=20_000,
    )
    await page.wait_for_function(
        "document.querySelectorAll('#partitions tr.partition').length === 4"
        " && document.getElementById('reshape').textContent.startsWith('done')",
        timeout=60_000,
    )
    assert await page.evaluate("window.__loadedOnce") == "same page"  # no reload happened
    assert await page.locator("#ring > div").count() == 4
    assert await page.inner_text("#partition-count") == "(4)"
    deadline = time.monotonic() + 20
    while "-" in await page.locator("#partitions tr.partition td:nth-child(4)").all_inner_texts():
        assert time.monotonic() < deadline, "a partition shows no leader on the page"
        await page.wait_for_timeout(200)
    shot = SCREENSHOT if os.environ.get(UPDATE_SCREENSHOT_ENV) == "1" else tmp_path / "status-page.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank image
    assert not errors, errors
