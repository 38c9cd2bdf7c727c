"""A real browser on the app: headless Chromium (Debian package) driven by Playwright.

Loads the page, runs the Robustness tab on the shipped demo identity with the public-domain
example face, waits for the numbers and the certificate, and saves a screenshot
(``$LADTALK_SCREENSHOT_DIR`` if set, else the test's temp dir). Skipped with the reason when
Chromium or Playwright is missing. Runs in well under two minutes on 2 CPU cores.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("LADTALK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser_page():
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set "
                    "LADTALK_CHROMIUM); the browser test needs a real browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            yield page
        finally:
            browser.close()


def test_robustness_tab_in_browser(browser_page, tmp_path, monkeypatch):
    demo_dir = ROOT / "checkpoints" / "identities" / "demo"
    if not (demo_dir / "model.safetensors").is_file():
        pytest.fail(f"the shipped demo identity is missing at {demo_dir}; rebuild it with "
                    "`python scripts/make_demo_identity.py`")
    import torch

    import app
    from ladtalk.generation.pipeline import Pipeline
    from ladtalk.models.wav2lip import Wav2Lip

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    torch.manual_seed(0)
    demo = app.create_demo(Pipeline(Wav2Lip(), device="cpu"), cache_examples=False)
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port,
                show_error=True, quiet=True)
    page = browser_page
    shots = Path(os.environ.get("LADTALK_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    try:
        # not "networkidle": the session heartbeat (the unload hook) keeps a stream open
        page.goto(f"http://127.0.0.1:{port}/", wait_until="load", timeout=60_000)
        page.get_by_role("tab", name="Robustness").click(timeout=60_000)
        page.locator("#rob-image input[type=file]").set_input_files(
            str(ROOT / "examples" / "astronaut.png"))
        page.locator("#rob-image img").first.wait_for(timeout=30_000)
        page.locator("#rob-run").click()
        cert = page.locator("#rob-cert")
        cert.get_by_role("cell", name="certified radius", exact=True).wait_for(timeout=150_000)
        page.wait_for_timeout(1500)  # let the table and the plot render
        shot = shots / "robustness_tab.png"
        page.screenshot(path=str(shot), full_page=True)
        text = page.locator("#rob-table").inner_text()
        for spec in ("blur:2.0", "noise:0.1", "down:96"):
            assert spec in text, text
        assert page.locator("#rob-gallery img").count() >= 8  # clean, recon, 3 x (deg, rest)
        assert "codes preserved" in cert.inner_text()
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
    finally:
        demo.close()
