"""The HTML report in a real headless Chromium: no console errors, every image and audio file it uses exists."""

from __future__ import annotations

import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian chromium; .ci/run installs it)")
def test_report_page_loads_cleanly(tiny_report):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (dev extra)")
    _, out = tiny_report
    page_path = out / "index.html"
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
        page.goto(page_path.as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        sources = page.evaluate("Array.from(document.querySelectorAll('audio')).map(a => a.getAttribute('src'))")
        tables = page.evaluate("document.querySelectorAll('table tbody tr').length")
        browser.close()
    assert not problems, problems
    assert images and all(width > 0 for _, width in images), images
    assert len(images) >= 2  # per-channel MSE and at least one example
    assert sources, "no audio players"
    for src in [s for s, _ in images] + sources:
        assert (out / src).is_file(), src
    assert tables >= 4
