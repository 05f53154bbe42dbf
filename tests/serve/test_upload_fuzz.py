"""Fuzzing the upload path: random and mutated PNG / JPEG / DICOM bytes posted to /v1/report.

Whatever the bytes, the answer is a result (2xx) or a clean refusal (4xx) with a message: never a
5xx (a bug, or a decode that ran into its timeout) and never a hang. Seeded, so a failure names the
case that reproduces it. A few hundred inputs in a few seconds through the in-process TestClient.
"""

from __future__ import annotations

import io
import random
import struct

import numpy as np
import pytest
from fastapi.testclient import TestClient

from crrg.serve.app import ServiceLimits, create_app
from tests.serve.serve_helpers import EchoGenerator, png_declaring, service_config
from tests.serve.test_app import dicom_bytes

CASES = 360
SEED = 20261205


def _png(rng: random.Random) -> bytes:
    from PIL import Image

    mode = rng.choice(["L", "I;16", "RGB", "RGBA", "P", "1"])
    size = (rng.randint(1, 48), rng.randint(1, 48))
    pixels = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 255, size[::-1], dtype=np.uint8)
    image = Image.fromarray(pixels, "L").convert(mode) if mode != "I;16" else Image.fromarray(pixels.astype(np.uint16) * 200)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(rng: random.Random) -> bytes:
    from PIL import Image

    size = (rng.randint(8, 64), rng.randint(8, 64))
    pixels = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 255, size[::-1], dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").convert(rng.choice(["L", "RGB", "CMYK"])).save(
        buffer, format="JPEG", quality=rng.randint(10, 95), progressive=rng.random() < 0.3)
    return buffer.getvalue()


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        kind = rng.randrange(7)
        at = rng.randrange(max(1, len(buf)))
        if kind == 0 and buf:  # flip bits
            buf[at] ^= 1 << rng.randrange(8)
        elif kind == 1:  # truncate
            del buf[at:]
        elif kind == 2:  # insert random bytes
            buf[at:at] = rng.randbytes(rng.randint(1, 32))
        elif kind == 3 and buf:  # overwrite with an extreme 16- or 32-bit value
            value = rng.choice([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])
            buf[at:at + 4] = struct.pack("<I", value)
        elif kind == 4:  # duplicate a slice
            end = min(len(buf), at + rng.randint(1, 256))
            buf[end:end] = buf[at:end]
        elif kind == 5 and buf:  # delete a slice
            del buf[at:at + rng.randint(1, 64)]
        else:  # overwrite a slice with random bytes
            n = rng.randint(1, 16)
            buf[at:at + n] = rng.randbytes(n)
    return bytes(buf)


def _case(i: int) -> tuple[str, bytes]:
    rng = random.Random(SEED * 1000 + i)
    kind = rng.choice(["png", "jpeg", "dicom", "dicom", "random", "bomb"])
    if kind == "random":
        data = rng.randbytes(rng.randint(0, 2048))
        if rng.random() < 0.5:  # random bytes behind a real magic number
            data = rng.choice([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\0" * 128 + b"DICM"]) + data
        return kind, data
    if kind == "bomb":
        return kind, png_declaring(rng.choice([1, 600, 4000, 70_000, 1 << 24]), rng.choice([1, 10, 7000, 1 << 20]))
    base = {"png": _png, "jpeg": _jpeg}[kind](rng) if kind != "dicom" else dicom_bytes(
        modality=rng.choice(["DX", "CR", "CT", ""]))
    return kind, base if rng.random() < 0.1 else _mutate(base, rng)


def _client(gate: bool) -> TestClient:
    limits = ServiceLimits(max_queue=4, decode_timeout_s=20.0, inference_timeout_s=20.0, max_pixels=8_000_000)
    app = create_app(EchoGenerator(), "echo", "1.0", service_config(limits=limits, gate=gate))
    return TestClient(app, base_url="http://localhost", raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client():
    with _client(gate=False) as c:
        yield c


@pytest.mark.timeout(120)
def test_fuzzed_uploads_get_a_result_or_a_clean_4xx(client):
    statuses: dict[int, int] = {}
    for i in range(CASES):
        kind, data = _case(i)
        field = random.Random(i).choice(["image", "frontal", "lateral"])
        r = client.post("/v1/report", files={field: ("upload.bin", data, "application/octet-stream")})
        assert r.status_code < 500, f"case {i} ({kind}, {len(data)} bytes): {r.status_code} {r.text[:200]}"
        assert r.headers["content-type"].startswith("application/json")
        if r.status_code >= 400:
            assert r.json()["detail"], f"case {i}: a refusal without a message"
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    assert statuses.get(200, 0) >= CASES // 20 and sum(v for k, v in statuses.items() if k >= 400) >= CASES // 4, statuses


@pytest.mark.timeout(120)
def test_fuzzed_uploads_through_the_chest_radiograph_gate():
    """With the gate on (the service's default), whatever decodes is judged by it: still never a 5xx."""
    statuses: dict[int, int] = {}
    with _client(gate=True) as client:
        for i in range(0, CASES, 2):
            kind, data = _case(i)
            r = client.post("/v1/report", files={"image": ("upload.bin", data, "application/octet-stream")})
            assert r.status_code < 500, f"case {i} ({kind}, {len(data)} bytes): {r.status_code} {r.text[:200]}"
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    assert statuses.get(422, 0) >= 10, statuses  # images that decode but are no chest film


def _multipart(rng: random.Random) -> bytes:
    """A multipart body (boundary ``fuzz``) of one to three parts, some of them files."""
    parts = []
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(["image", "frontal", "lateral", "indication", "other"])
        filename = "" if name == "indication" and rng.random() < 0.8 else '; filename="x.png"'
        data = _png(rng) if filename else b"cough"
        parts.append(f'--fuzz\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode() + data + b"\r\n")
    return b"".join(parts) + b"--fuzz--\r\n"


@pytest.mark.timeout(120)
def test_fuzzed_multipart_framing_gets_a_result_or_a_clean_4xx(client):
    """Mutations of the whole body (boundaries, part headers, truncation), and of the Content-Type."""
    statuses: dict[int, int] = {}
    for i in range(CASES // 2):
        rng = random.Random(SEED + i)
        body = _multipart(rng)
        body = body if rng.random() < 0.2 else _mutate(body, rng)
        content_type = rng.choice(["multipart/form-data; boundary=fuzz"] * 6 + [
            "multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=other",
            "multipart/form-data; boundary=" + "b" * 300, "multipart/mixed; boundary=fuzz"])
        r = client.post("/v1/report", content=body, headers={"content-type": content_type})
        assert r.status_code < 500, f"case {i}: {r.status_code} {r.text[:200]}"
        if r.status_code >= 400:
            assert r.json()["detail"], f"case {i}: a refusal without a message"
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    assert statuses.get(200, 0) >= 5 and statuses.get(400, 0) >= 20, statuses
