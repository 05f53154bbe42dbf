"""Web hardening without a key on localhost (issue 23 item 14), statuses by error class, and the
`crrg serve` default model. Each test failed on the previous version."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from crrg.errors import ImageError, InputError
from crrg.serve.app import create_app
from tests.serve.serve_helpers import EchoGenerator, png_bytes, service_config

FILES = {"image": ("a.png", png_bytes(), "image/png")}


def client_for(generator, base_url: str = "http://localhost", **config) -> TestClient:
    return TestClient(create_app(generator, "echo", "1.0", service_config(**config)), base_url=base_url)


@pytest.mark.parametrize("host, expected", [
    ("localhost", 200), ("localhost:8000", 200), ("127.0.0.1:8000", 200), ("[::1]:8000", 200),
    ("attacker.example", 400), ("attacker.example:8000", 400), ("localhost.attacker.example", 400), ("", 400),
])
def test_host_header_allow_list_defeats_dns_rebinding(echo, host, expected):
    client = client_for(echo)
    assert client.get("/healthz", headers={"host": host}).status_code == expected
    r = client.post("/v1/report", files=FILES, headers={"host": host})
    assert r.status_code == expected
    assert echo.calls == (1 if expected == 200 else 0)


def test_extra_allowed_host():
    client = client_for(EchoGenerator(), base_url="http://crrg.internal", allowed_hosts=("localhost", "crrg.internal"))
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("headers", [
    {"origin": "https://attacker.example"},
    {"origin": "null"},
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-site", "origin": "http://other.localhost"},
])
def test_cross_site_posts_are_refused(echo, headers):
    r = client_for(echo).post("/v1/report", files=FILES, headers=headers)
    assert r.status_code == 403, r.text
    assert echo.calls == 0


@pytest.mark.parametrize("headers", [
    {},  # curl, httpx, scripts: no browser headers
    {"origin": "http://localhost", "sec-fetch-site": "same-origin"},  # the viewer itself
    {"sec-fetch-site": "none"},  # typed into the address bar
])
def test_same_origin_and_non_browser_posts_pass(echo, headers):
    assert client_for(echo).post("/v1/report", files=FILES, headers=headers).status_code == 200


def test_cors_origin_may_post_cross_site(echo):
    client = client_for(echo, cors_origins=("https://app.example",))
    r = client.post("/v1/report", files=FILES, headers={"origin": "https://app.example", "sec-fetch-site": "cross-site"})
    assert r.status_code == 200


@pytest.mark.parametrize("method, path", [("get", "/healthz"), ("get", "/"), ("post", "/v1/report"), ("get", "/nowhere")])
def test_security_headers_on_every_answer(echo, method, path):
    client = client_for(echo)
    r = client.post(path, files=FILES) if method == "post" else client.get(path)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    if path == "/v1/report":
        assert r.headers["cache-control"] == "no-store"  # reports are patient data


def test_viewer_csp_allows_exactly_its_own_script(echo):
    r = client_for(echo).get("/")
    scripts = re.findall(r"<script>(.*?)</script>", r.text, flags=re.S)
    assert scripts and "<script src" not in r.text
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    script_src = re.search(r"script-src ([^;]*)", r.headers["content-security-policy"]).group(1).split()
    assert script_src == [f"'sha256-{digest}'"]  # no 'unsafe-inline', no other origin


def test_docs_served_locally_without_cdn(echo):
    pytest.importorskip("swagger_ui")
    client = client_for(echo)
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/docs/assets/") for s in sources), sources
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200 and len(asset.content) > 100
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/docs/assets/..%2F..%2Fsetup.py").status_code == 404
    assert client.get("/docs/assets/index.html").status_code == 404


@pytest.mark.parametrize("keys, optional", [(frozenset(), True), (frozenset({"k" * 20}), False)])
def test_openapi_declares_security_and_error_responses(echo, keys, optional):
    schema = client_for(echo, api_keys=keys).get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"}
    assert schemes["apiKeyHeader"]["in"] == "header" and schemes["apiKeyHeader"]["name"] == "X-API-Key"
    operation = schema["paths"]["/v1/report"]["post"]
    assert ({} in operation["security"]) is optional
    for status in ("200", "400", "401", "413", "415", "422", "429", "503", "504"):
        assert status in operation["responses"], status
    assert "Retry-After" in operation["responses"]["429"]["headers"]
    assert "security" in schema["paths"]["/v1/models"]["get"]


class FailingGenerator(EchoGenerator):
    def __init__(self, error: Exception):
        super().__init__()
        self.error = error

    def generate_report(self, study, **options):
        raise self.error


@pytest.mark.parametrize("error, expected", [
    (InputError("the modality of this study is not an image the model knows"), 400),  # words do not choose the status
    (ImageError("not an image"), 400),
])
def test_status_is_chosen_by_error_class_not_by_message_text(error, expected):
    r = client_for(FailingGenerator(error)).post("/v1/report", files=FILES)
    assert r.status_code == expected and r.json()["detail"] == str(error)


def test_wrong_modality_class_is_415_whatever_its_text():
    from crrg.serve.errors import http_status
    from crrg.serve.inputs import UnsupportedModality

    assert http_status(UnsupportedModality("CT is refused")) == 415
    assert http_status(InputError("wrong modality")) == 400


def test_serve_without_model_serves_the_bundled_default(monkeypatch):
    import crrg.generation
    import crrg.serve.server
    from crrg.cli.main import app
    from crrg.models.registry import DEFAULT_MODEL

    loaded, served = [], []

    class Stub(EchoGenerator):
        crrg_config = {"version": "9.9"}

    monkeypatch.setattr(crrg.generation, "load_generator", lambda name, device: loaded.append((name, device)) or Stub())
    monkeypatch.setattr(crrg.serve.server, "serve",
                        lambda application, host, port, limits=None: served.append((host, application.state.service.gate)))
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    assert loaded == [(DEFAULT_MODEL, "auto")] and served == [("127.0.0.1", True)]
    assert CliRunner().invoke(app, ["serve", "--no-gate"]).exit_code == 0 and served[-1] == ("127.0.0.1", False)


class OptionsEcho(EchoGenerator):
    def generate_report(self, study, **options):
        report = super().generate_report(study)
        report.findings += f" Options {sorted(options.items())}."
        return report


def test_decoding_options_as_query_parameters(echo):
    client = client_for(OptionsEcho())
    r = client.post("/v1/report", files=FILES, params={"beams": "4", "learned_order": "false", "joint": "filter"})
    assert r.status_code == 200, r.text
    assert "('beams', 4)" in r.json()["findings"] and "('learned_order', False)" in r.json()["findings"]
    assert "Options []" in client.post("/v1/report", files=FILES).json()["findings"]  # the model's defaults
    for bad in ({"beams": "many"}, {"bogus": "1"}, {"beams": "0"}, {"beams": "64"}, {"max_new_tokens": "100000"}):
        r = client.post("/v1/report", files=FILES, params=bad)
        assert r.status_code == 422 and r.json()["detail"], bad
    names = {p["name"] for p in client.get("/openapi.json").json()["paths"]["/v1/report"]["post"]["parameters"]}
    assert {"format", "preview", "beams", "consensus", "joint"} <= names


EXAMPLE_FILM = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples" / "normal_frontal.png"


@pytest.mark.parametrize("gate", [True, False])
def test_chest_radiograph_gate_422_and_modality_415(gate):
    from tests.serve.test_app import dicom_bytes

    echo = EchoGenerator()
    client = TestClient(create_app(echo, "echo", "1.0", service_config(gate=gate)), base_url="http://localhost")
    film = client.post("/v1/report", files={"image": ("f.png", EXAMPLE_FILM.read_bytes(), "image/png")})
    assert film.status_code == 200, film.text
    flat = client.post("/v1/report", files=FILES)  # a flat gray square: no chest film
    assert flat.status_code == (422 if gate else 200), flat.text
    if gate:
        assert "chest radiograph" in flat.json()["detail"]
    ct = client.post("/v1/report", files={"image": ("ct.dcm", dicom_bytes(modality="CT"), "application/dicom")})
    assert ct.status_code == 415 and "modality CT" in ct.json()["detail"]  # refused by its header, gate or not
    assert echo.calls == (1 if gate else 2)
