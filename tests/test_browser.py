"""A real browser on the app: headless Chromium (Debian package) driven by Playwright.

Clicks every example of every tab (Generate's two rows, lazily cached as in the real app;
Robustness's, which runs on click; Enroll's, then enrolls with a short budget), waits for the
outputs, and fails on any page error (an uncaught exception in the page, such as the line
plot's TypeError that used to leave every output on "processing"). Also uploads a picture by
hand, and looks at the page at a phone width. The page drivers are those of
``scripts/screenshots.py``. Skipped with the reason when Chromium or Playwright is missing.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _screenshots():
    spec = importlib.util.spec_from_file_location("screenshots",
                                                  ROOT / "scripts" / "screenshots.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


shots = _screenshots()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    demo_dir = ROOT / "checkpoints" / "identities" / "demo"
    if not (demo_dir / "model.safetensors").is_file():
        pytest.fail(f"the shipped demo identity is missing at {demo_dir}; rebuild it with "
                    "`python scripts/make_demo_identity.py`")
    import torch

    import app
    from ladtalk.generation.pipeline import Pipeline
    from ladtalk.models.wav2lip import Wav2Lip

    home = tmp_path_factory.mktemp("browser_home")
    mp = pytest.MonkeyPatch()
    for k, v in {"LADTALK_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False",
                 "GRADIO_EXAMPLES_CACHE": str(home / "examples-cache")}.items():
        mp.setenv(k, v)
    torch.manual_seed(0)
    # the real app's example caching; a tiny enrollment so the Enroll example runs quickly
    demo = app.create_demo(Pipeline(Wav2Lip(), device="cpu", batch_size=16),
                           enroll_config="tiny", cache_examples=True,
                           enroll_kwargs={"train_overrides": {"final_frames": 4,
                                                              "eval_frames": 4}})
    try:
        yield shots.launch(demo)
    finally:
        demo.close()
        mp.undo()


@pytest.fixture(scope="module")
def browser():
    if not shots.CHROMIUM.is_file():
        pytest.skip(f"Chromium not found at {shots.CHROMIUM} (apt-get install chromium, or "
                    "set LADTALK_CHROMIUM); the browser test needs a real browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(shots.CHROMIUM), headless=True,
                              args=shots.CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, app_url, request):
    """A fresh desktop-width page; the test fails if the page raised anything."""
    errors = []
    pg = shots.open_page(browser, app_url, 1280, errors)
    yield pg
    try:
        shot_dir = os.environ.get("LADTALK_SCREENSHOT_DIR")
        if shot_dir:  # where the test ended, for a human to look at
            pg.screenshot(path=str(Path(shot_dir) / f"{request.node.name}.png"),
                          full_page=True)
    finally:
        pg.close()
    assert errors == [], errors


def test_generate_examples(page):
    first = shots.run_generate_example(page, 0)
    report = page.locator("#gen-report").inner_text()
    assert "frames" in report and "demo" in report
    # the shipped identity's row renders the baseline beside it
    assert page.locator("#gen-base video").count() == 1
    second = shots.run_generate_example(page, 1)
    assert second != first


def test_robustness_example(page):
    shots.run_robustness_example(page)
    table = page.locator("#rob-table").inner_text()
    for spec in ("blur 2.0", "noise 0.1", "down 96", "SSIM restored", "codes preserved"):
        assert spec in table, table
    plot = page.locator("#rob-plot").inner_text()
    assert "degraded" in plot and "restored" in plot and "blur sigma (px)" in plot, plot
    assert page.locator("#rob-gallery img").count() >= 8  # clean, recon, 3 x (deg, rest)
    assert "codes kept" in page.locator("#rob-cert").inner_text()


def test_enroll_example(page):
    shots.run_enroll_example(page, seconds=2)
    summary = page.locator("#enroll-summary").inner_text()
    assert "astronaut" in summary and "holdout" in summary.lower(), summary
    files = page.locator("#enroll-file").inner_text()
    assert "astronaut.safetensors" in files.replace("\n", ""), files  # name, ext: 2 spans


def cells_outside(page, selector: str) -> list:
    """Texts of the table cells in ``selector`` that end right of its box or overflow their
    own cell."""
    return page.evaluate("""(sel) => {
        const box = document.querySelector(sel).getBoundingClientRect();
        return [...document.querySelectorAll(sel + ' th, ' + sel + ' td')]
            .filter(c => c.innerText.trim() && (c.getBoundingClientRect().right > box.right + 1
                                                 || c.scrollWidth > c.clientWidth + 1))
            .map(c => c.innerText.trim()); }""", selector)


def test_robustness_upload_at_phone_width(browser, app_url):
    errors = []
    pg = shots.open_page(browser, app_url, 390, errors)
    try:
        shots.show_tab(pg, "robustness")
        table = pg.locator("#rob-table").inner_text()
        assert "PSNR restored (dB)" in table and "1\n2\n3" not in table  # the empty table
        pg.locator("#rob-image input[type=file]").set_input_files(
            str(ROOT / "examples" / "astronaut.png"))
        pg.locator("#rob-image img").first.wait_for(timeout=30_000)
        pg.locator("#rob-run").click()
        pg.locator("#rob-cert").get_by_role("cell", name="certified radius",
                                            exact=True).wait_for(timeout=150_000)
        pg.locator("#rob-table").get_by_text("blur 2.0").first.wait_for(timeout=30_000)
        # nothing wider than the phone's screen, and the metrics table fits without scrolling
        width = pg.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1, width
        # (every filled cell ends inside the table's box: none is scrolled out of view)
        assert cells_outside(pg, "#rob-table") == []
        # the certificate's markdown tables wrap between words only, and still fit
        wraps = pg.evaluate("""() => [...document.querySelectorAll('#rob-cert td')]
            .map(c => getComputedStyle(c).overflowWrap)""")
        assert len(wraps) > 10 and set(wraps) == {"normal"}, wraps
        assert cells_outside(pg, "#rob-cert") == []
    finally:
        pg.close()
    assert errors == [], errors
