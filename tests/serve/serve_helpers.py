"""Service test helpers: a deterministic stand-in generator and a real uvicorn server on 127.0.0.1.

The stand-in echoes what it received (indication, image sizes and mean intensity) so tests can prove
that concurrent requests never get each other's results; the real models are tested in their own
packages and once through the service in test_service_real_model.py.
"""

from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np
from crrg.observations import CHEXPERT_14
from crrg.reporting import GeneratedReport, RegionOut, SentenceOut, StudyInput


class EchoGenerator:
    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.calls = 0
        self._lock = threading.Lock()

    def generate_report(self, study: StudyInput, **options) -> GeneratedReport:
        with self._lock:
            self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        h, w = study.images[0].shape
        mean = float(np.mean(study.images[0]))
        findings = f"Indication echo: {study.indication}. Size {w}x{h}. Mean {mean:.4f}. Views {','.join(study.views)}."
        probs = {name: 0.9 if name == "Cardiomegaly" else 0.1 for name in CHEXPERT_14}
        labels = {name: 1 if p >= 0.5 else 0 for name, p in probs.items()}
        box = [w * 0.3, h * 0.5, w * 0.8, h * 0.9]
        return GeneratedReport(
            findings=findings, impression="Cardiomegaly.",
            sentences=[SentenceOut(text="The heart is enlarged.", region="cardiac silhouette", image=0, box=box)],
            regions=[RegionOut(name="cardiac silhouette", image=0, box=box, abnormal_probability=0.9, selected=True)],
            probabilities=probs, labels=labels, model="echo")


def service_config(**kwargs):
    """A ServiceConfig with the chest-radiograph gate off unless asked: these tests post flat gray
    stand-in images (the gate itself is tested in test_hardening.py and tests/image)."""
    from crrg.serve.app import ServiceConfig

    if "gate" in ServiceConfig.__dataclass_fields__:  # (absent in the previous version: before/after runs)
        kwargs.setdefault("gate", False)
    return ServiceConfig(**kwargs)


def png_bytes(value: int = 128, size: tuple[int, int] = (64, 48), mode: str = "L") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` (a would-be bomb; the pixel data is tiny)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn in a background thread (with crrg's connection limits when given), stopped at teardown."""

    def __init__(self, app, limits=None):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if limits is None:
            config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        else:
            from crrg.serve.server import uvicorn_config

            config = uvicorn_config(app, "127.0.0.1", self.port, limits, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def multipart_head(port: int, content_length: int, boundary: str = "crrgboundary", path: str = "/v1/report") -> bytes:
    """Request line and headers of a multipart POST whose body the caller sends (or not) by hand."""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {content_length}\r\n\r\n").encode()


def multipart_body(data: bytes, boundary: str = "crrgboundary", name: str = "image") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()


def read_status(sock: socket.socket, timeout: float) -> int | None:
    """The status code of the first answer on ``sock`` within ``timeout`` s; None when none came
    (or the connection closed without one)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
    except (socket.timeout, ConnectionError):
        return None
    return int(data.split(b" ", 2)[1])


def closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closes ``sock`` (reading and dropping what it sends), None if still open."""
    start = time.perf_counter()
    sock.settimeout(0.1)
    while time.perf_counter() - start < timeout:
        try:
            if not sock.recv(4096):
                return time.perf_counter() - start
        except socket.timeout:
            continue
        except ConnectionError:
            return time.perf_counter() - start
    return None
