from __future__ import annotations

import base64
import io
import logging
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from crrg.serve.app import ServiceLimits, create_app
from tests.serve.serve_helpers import EchoGenerator, LiveServer, png_bytes, service_config

KEY = "k" * 8 + "secret-key-123456"


def client_for(generator, **config) -> TestClient:
    return TestClient(create_app(generator, "echo", "1.0", service_config(**config)), base_url="http://localhost")


def post(client, files, **kwargs):
    return client.post("/v1/report", files=files, **kwargs)


def dicom_bytes(modality: str = "DX", patient: str = "DOE^JOHN") -> bytes:
    import numpy as np
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID, ds.ViewPosition = modality, patient, "PID-777", "PA"
    pixels = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_health_models_and_viewer(echo):
    client = client_for(echo)
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/v1/models").json()["models"][0]["name"] == "echo"
    page = client.get("/")
    assert page.status_code == 200 and "drop" in page.text.lower() and "Not for clinical use" in page.text
    assert "/v1/report" in client.get("/openapi.json").json()["paths"]


def test_report_json_and_fhir(echo):
    client = client_for(echo)
    r = post(client, {"image": ("a.png", png_bytes(200), "image/png")}, data={"indication": "dyspnea"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "Indication echo: dyspnea" in body["findings"] and body["impression"] == "Cardiomegaly."
    assert body["model"] == {"name": "echo", "version": "1.0"}
    assert body["regions"][0]["name"] == "cardiac silhouette" and len(body["regions"][0]["box"]) == 4
    assert set(body["timings_ms"]) == {"decode_ms", "inference_ms", "total_ms"}
    assert "preview_png" not in body["images"][0]
    fhir = post(client, {"image": ("a.png", png_bytes(), "image/png")}, params={"format": "fhir"})
    assert fhir.status_code == 200 and fhir.headers["content-type"].startswith("application/fhir+json")
    resource = fhir.json()
    assert resource["resourceType"] == "DiagnosticReport" and resource["status"] == "preliminary"
    assert resource["conclusion"] == "Cardiomegaly."
    text = base64.b64decode(resource["presentedForm"][0]["data"]).decode()
    assert "FINDINGS:" in text and "IMPRESSION: Cardiomegaly." in text
    codes = [c["coding"][0]["code"] for c in resource["conclusionCode"]]
    assert codes == ["8186001"]  # only the positive finding, coded in SNOMED CT


def test_preview_and_two_views(echo):
    client = client_for(echo)
    r = post(client, [("frontal", ("f.png", png_bytes(10, (80, 60)), "image/png")),
                      ("lateral", ("l.png", png_bytes(20, (70, 60)), "image/png"))], params={"preview": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [im["view"] for im in body["images"]] == ["PA", "LATERAL"]
    assert base64.b64decode(body["images"][0]["preview_png"]).startswith(b"\x89PNG")
    assert "Views PA,LATERAL" in body["findings"]


def test_api_keys_constant_time_and_required(echo):
    client = client_for(echo, api_keys=frozenset({KEY}))
    files = {"image": ("a.png", png_bytes(), "image/png")}
    assert post(client, files).status_code == 401
    assert post(client, files, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert post(client, files, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert post(client, files, headers={"X-API-Key": KEY}).status_code == 200
    assert client.get("/v1/models").status_code == 401
    assert echo.calls == 2  # rejected requests never reach the model


@pytest.mark.parametrize("files, expected", [
    ({"image": ("a.png", b"this is not an image at all", "image/png")}, 400),
    ({"image": ("a.png", png_bytes()[:40], "image/png")}, 400),
    ({"image": ("a.png", b"", "image/png")}, 400),
    ({"indication": (None, "no image here")}, 400),
    ([("image", ("a.png", png_bytes(), "image/png"))] * 3, 400),
])
def test_bad_input_gets_4xx_with_message(echo, files, expected):
    r = post(client_for(echo), files)
    assert r.status_code == expected, r.text
    assert r.json()["detail"]


def test_not_multipart_and_wrong_modality(echo):
    client = client_for(echo)
    assert client.post("/v1/report", content=b"{}", headers={"content-type": "application/json"}).status_code == 415
    r = post(client, {"image": ("ct.dcm", dicom_bytes(modality="CT"), "application/dicom")})
    assert r.status_code == 415 and "modality CT" in r.json()["detail"]
    assert echo.calls == 0


def test_dicom_accepted_and_patient_data_never_logged(echo, caplog):
    caplog.set_level(logging.DEBUG)
    r = post(client_for(echo), {"image": ("DOE_JOHN.dcm", dicom_bytes(), "application/dicom")})
    assert r.status_code == 200, r.text
    assert r.json()["images"][0]["view"] == "PA"
    logged = caplog.text
    assert "DOE" not in logged and "PID-777" not in logged and "JOHN" not in logged


def test_upload_limit(echo):
    client = client_for(echo, limits=ServiceLimits(max_upload_bytes=10_000))
    r = post(client, {"image": ("a.png", b"\x89PNG" + b"0" * 20_000, "image/png")})
    assert r.status_code == 413


def test_timeout_gives_504():
    client = client_for(EchoGenerator(delay_s=1.5), limits=ServiceLimits(inference_timeout_s=0.2))
    assert post(client, {"image": ("a.png", png_bytes(), "image/png")}).status_code == 504


def test_concurrent_requests_never_mix_results():
    generator = EchoGenerator(delay_s=0.02)
    app = create_app(generator, "echo", "1.0", service_config(limits=ServiceLimits(max_queue=64, workers=2)))
    with LiveServer(app) as server, httpx.Client(timeout=30) as http:
        def one(i: int):
            r = http.post(f"{server.url}/v1/report", files={"image": ("a.png", png_bytes(i * 7 % 256, (40 + i, 30)), "image/png")},
                          data={"indication": f"request-{i}"})
            return i, r.status_code, r.json()

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(48)))
    for i, status, body in results:
        assert status == 200
        assert f"Indication echo: request-{i}." in body["findings"]
        assert f"Size {40 + i}x30." in body["findings"]


def test_full_queue_answers_429():
    app = create_app(EchoGenerator(delay_s=0.5), "echo", "1.0", service_config(limits=ServiceLimits(max_queue=2)))
    with LiveServer(app) as server, httpx.Client(timeout=30) as http:
        def one(i: int) -> int:
            return http.post(f"{server.url}/v1/report", files={"image": ("a.png", png_bytes(), "image/png")}).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(8)))
    assert statuses.count(429) >= 1 and statuses.count(200) >= 2
    assert set(statuses) <= {200, 429}
