"""Screenshot of the web viewer with a real model's report (for the README).

    python benchmarks/screenshot_viewer.py --model crrg-default --image examples/heart-failure_frontal.png \\
        --out docs/images/viewer.png

Starts the service on 127.0.0.1, uploads the image in Debian's headless Chromium (Playwright), waits
for the report and saves a full-page PNG.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import serve_in_thread  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="crrg-default")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--indication", default="Decreased breath sounds at the base.")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from crrg.models.registry import load_pretrained
    from crrg.serve.app import create_app

    generator = load_pretrained(args.model)
    app = create_app(generator, args.model, str(generator.crrg_config.get("version", "")))
    server, base = serve_in_thread(app)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.goto(base + "/")
        page.fill("#indication", args.indication)
        page.set_input_files("#file", str(args.image))
        page.wait_for_function("document.getElementById('report').value.length > 0", timeout=120_000)
        canvas = page.locator("#canvas").bounding_box()
        page.mouse.move(canvas["x"] + canvas["width"] * 0.3, canvas["y"] + canvas["height"] * 0.75)
        time.sleep(0.3)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    server.should_exit = True
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
