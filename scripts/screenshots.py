"""Screenshots of every tab after a run, at a desktop (1280 px) and a phone (390 px) width.

    python scripts/screenshots.py [--out DIR] [--wav2lip CKPT | --untrained-wav2lip]
                                  [--enroll-seconds S]

Launches the app, runs each tab from its own example in headless Chromium (Debian's
``chromium``; ``--chromium PATH`` or ``$LADTALK_CHROMIUM`` for another), and saves
``TAB-WIDTH.png`` in ``--out`` (default ``bench_out/screenshots``; the identity it enrolls
lives in a scratch ``LADTALK_HOME``, removed at the end). Any page error (an
uncaught exception in the page) fails the run. ``--untrained-wav2lip`` uses a Wav2Lip with
random weights when the checkpoint is not at hand: the layout is the real one, the mouths are
not. ``tests/test_browser.py`` drives the page with the functions of this file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, List, Optional

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("LADTALK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WIDTHS = (1280, 390)
TABS = ("generate", "robustness", "enroll")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(demo) -> str:
    """Launch ``demo`` on a free local port; its URL."""
    from ladtalk.app import launch_options

    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port,
                show_error=True, quiet=True, **launch_options(demo))
    return f"http://127.0.0.1:{port}/"


def open_page(browser, url: str, width: int, errors: List[str]):
    """A page of ``url`` at ``width`` px; uncaught page exceptions are appended to
    ``errors``."""
    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.on("pageerror", lambda exc: errors.append(f"{width} px: {exc}"))
    # not "networkidle": the session heartbeat (the unload hook) keeps a stream open
    page.goto(url, wait_until="load", timeout=60_000)
    page.locator("#gen-run").wait_for(timeout=60_000)
    return page


def show_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name.capitalize()).click(timeout=60_000)


def click_example(page, examples_id: str, row: int = 0) -> None:
    """Click row ``row`` of the examples block ``examples_id``."""
    page.locator(f"#{examples_id} [data-testid=dataset-cell-{row}-0]").click(timeout=30_000)


def _src(page, selector: str) -> Optional[str]:
    loc = page.locator(selector)
    return loc.first.get_attribute("src") if loc.count() else None


def run_generate_example(page, row: int, timeout_s: float = 300) -> str:
    """Click Generate's example ``row``; wait for a new LaDTalk video; its ``src``."""
    show_tab(page, "generate")
    before = _src(page, "#gen-out video")
    click_example(page, "gen-examples", row)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        src = _src(page, "#gen-out video")
        if src and src != before:
            return src
        page.wait_for_timeout(250)
    raise TimeoutError(f"Generate example {row}: no new video after {timeout_s:.0f} s")


def run_robustness_example(page, timeout_s: float = 150) -> None:
    """Click Robustness's example; wait for the certificate, the table and the plot."""
    show_tab(page, "robustness")
    cert = page.locator("#rob-cert")
    click_example(page, "rob-examples")
    cert.get_by_role("cell", name="certified radius", exact=True).wait_for(
        timeout=timeout_s * 1000)
    page.locator("#rob-table").get_by_text("blur 2.0").first.wait_for(timeout=30_000)
    page.locator("#rob-plot").get_by_text("restored").first.wait_for(timeout=30_000)


def run_enroll_example(page, seconds: int, timeout_s: float = 600) -> None:
    """Click Enroll's example, set the budget to ``seconds``, enroll, wait for the summary."""
    show_tab(page, "enroll")
    click_example(page, "enroll-examples")
    name = page.locator("#enroll-name textarea, #enroll-name input").first
    page.wait_for_function("el => el.value === 'astronaut'", arg=name.element_handle(),
                           timeout=30_000)
    budget = page.locator("#enroll-budget input[type=number]")
    budget.fill(str(int(seconds)))
    budget.press("Enter")
    page.locator("#enroll-video video").first.wait_for(timeout=30_000)
    page.locator("#enroll-run").click()
    # the summary's heading, not the progress text ("... identity 'astronaut' ...")
    page.locator("#enroll-summary h3").get_by_text("Identity").wait_for(
        timeout=timeout_s * 1000)


def settle(page, ms: int = 1500) -> None:
    """Let the last outputs render (plots, tables, video posters)."""
    page.wait_for_timeout(ms)


def shoot(page, out: Path, tab: str, width: int) -> Path:
    path = out / f"{tab}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def run_all(browser, url: str, out: Path, enroll_seconds: int, log=print) -> List[str]:
    """Every tab from its example at every width, a screenshot each; the page errors."""
    errors: List[str] = []
    out.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page = open_page(browser, url, width, errors)
        for tab in TABS:
            t0 = time.time()
            if tab == "generate":
                for row in (1, 0):  # the shipped-identity row last: it stays on screen
                    run_generate_example(page, row)
            elif tab == "robustness":
                run_robustness_example(page)
            else:
                run_enroll_example(page, enroll_seconds)
            settle(page)
            log(f"{shoot(page, out, tab, width)}  ({time.time() - t0:.1f} s)")
        page.close()
    return errors


def _demo(args) -> Any:
    import app

    if not args.untrained_wav2lip:
        return app.create_demo(wav2lip=args.wav2lip)
    import torch

    from ladtalk.generation.pipeline import Pipeline
    from ladtalk.models.wav2lip import Wav2Lip

    torch.manual_seed(0)
    return app.create_demo(Pipeline(Wav2Lip(), device="cpu"))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out" / "screenshots")
    ap.add_argument("--wav2lip", default=None, help="Wav2Lip checkpoint (default: the app's)")
    ap.add_argument("--untrained-wav2lip", action="store_true",
                    help="random Wav2Lip weights (layout only) when no checkpoint is at hand")
    ap.add_argument("--enroll-seconds", type=int, default=5)
    ap.add_argument("--chromium", type=Path, default=CHROMIUM)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # the enrolled identity and the cached examples go to a scratch home, never the user's
    scratch = Path(tempfile.mkdtemp(prefix="screenshots-home-"))
    os.environ["LADTALK_HOME"] = str(scratch)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(scratch / "gradio-examples")
    from playwright.sync_api import sync_playwright

    demo = _demo(args)
    try:
        url = launch(demo)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(args.chromium), headless=True,
                                        args=CHROMIUM_ARGS)
            try:
                errors = run_all(browser, url, args.out, args.enroll_seconds)
            finally:
                browser.close()
    finally:
        demo.close()
        shutil.rmtree(scratch, ignore_errors=True)
    for e in errors:
        print(f"page error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
