"""The web viewer in a real headless Chromium (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import shutil

import pytest

from crrg.serve.app import create_app
from tests.serve.serve_helpers import EchoGenerator, LiveServer, png_bytes, service_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


def test_viewer_upload_boxes_hover_report_and_bars(tmp_path):
    image = tmp_path / "study.png"
    image.write_bytes(png_bytes(90, (400, 400)))
    app = create_app(EchoGenerator(), "echo", "1.0", service_config())
    with LiveServer(app) as server, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server.url + "/")
        assert "Not for clinical use" in page.inner_text("#disclaimer")
        page.fill("#indication", "chest pain")
        page.set_input_files("#file", str(image))
        page.wait_for_selector("#report:not(:placeholder-shown)", timeout=20_000)  # the page's CSP forbids eval-based waits
        report = page.input_value("#report")
        assert "FINDINGS: Indication echo: chest pain." in report and "IMPRESSION: Cardiomegaly." in report
        assert page.locator("#probs .bar").count() == 14
        assert page.locator("#probs .fill.pos").count() == 1  # the one positive finding is highlighted
        # the report box is editable
        page.fill("#report", report + " Edited by reader.")
        assert page.input_value("#report").endswith("Edited by reader.")
        # hovering the cardiac box shows its sentence; the box is drawn in the abnormal colour
        canvas = page.locator("#canvas")
        bbox = canvas.bounding_box()
        page.mouse.move(bbox["x"] + bbox["width"] * 0.55, bbox["y"] + bbox["height"] * 0.7)
        page.wait_for_selector("#tip", state="visible", timeout=5_000)
        assert "cardiac silhouette: The heart is enlarged." in page.inner_text("#tip")
        red = page.evaluate("""() => { const c = document.getElementById('canvas').getContext('2d');
            const d = c.getImageData(Math.round(400*0.3), Math.round(400*0.7), 1, 1).data; return [d[0], d[1], d[2]]; }""")
        assert red[0] > 200 and red[1] < 150, red
        # window/level changes the displayed pixels
        before = page.evaluate("() => document.getElementById('canvas').getContext('2d').getImageData(10, 10, 1, 1).data[0]")
        page.evaluate("() => { const w = document.getElementById('window'); w.value = 40; w.dispatchEvent(new Event('input')); }")
        after = page.evaluate("() => document.getElementById('canvas').getContext('2d').getImageData(10, 10, 1, 1).data[0]")
        assert before != after
        page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
        assert (tmp_path / "viewer.png").stat().st_size > 10_000
        browser.close()


def test_viewer_shows_server_errors(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"definitely not a png")
    app = create_app(EchoGenerator(), "echo", "1.0", service_config())
    with LiveServer(app) as server, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page()
        page.goto(server.url + "/")
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#error:not(:empty)", timeout=20_000)
        assert page.inner_text("#error").startswith("400")
        browser.close()


def test_docs_render_from_local_assets_under_csp():
    """Swagger UI comes from the service itself and runs under its Content-Security-Policy."""
    pytest.importorskip("swagger_ui")
    app = create_app(EchoGenerator(), "echo", "1.0", service_config())
    with LiveServer(app) as server, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page()
        errors, foreign = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith(server.url) else None)
        page.goto(server.url + "/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=20_000)
        assert "/v1/report" in page.inner_text("#swagger-ui")
        assert foreign == []  # nothing from a CDN
        assert not [e for e in errors if "Content Security Policy" in e], errors
        page.goto(server.url + "/")
        page.wait_for_timeout(300)
        assert not [e for e in errors if "Content Security Policy" in e], errors
        browser.close()
