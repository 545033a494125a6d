"""Save a full-page screenshot of the demo after it analyses one news sentence.

Usage::

    python docs/screenshot.py [--checkpoint DIR] [--out docs/demo.png] [--width 1280]

Without ``--checkpoint`` the base model with untrained heads is served (the page then shows
its "untrained heads" banner). Needs Debian's Chromium at /usr/bin/chromium
(``.ci/install-browser.sh``) and Playwright for Python.
"""

import argparse
import logging
from pathlib import Path

from playwright.sync_api import sync_playwright

from mtst.demo.app import create_app, load_predictor, serve_in_background

logger = logging.getLogger("screenshot")

SENTENCE = "Apple shares rose in New York after Tim Cook met European Union officials in Brussels."
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def screenshot(url: str, out: Path, text: str, width: int = 1280) -> None:
    """Open ``url``, analyse ``text`` and save a full-page PNG to ``out``."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=1)
        page.goto(url)
        page.fill("#text", text)
        page.click("#submit")
        page.wait_for_selector("#results:not([hidden])")
        page.wait_for_function("document.querySelector('#submit').textContent === 'Analyze'")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    logger.info("wrote %s", out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="trained model folder (default: base model, untrained heads)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "demo.png")
    parser.add_argument("--text", default=SENTENCE)
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels")
    args = parser.parse_args(argv)
    server = serve_in_background(create_app(load_predictor(args.checkpoint)))
    try:
        screenshot(f"http://127.0.0.1:{server.server_port}/", args.out, args.text, args.width)
    finally:
        server.shutdown()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
