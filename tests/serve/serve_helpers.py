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


def png_bytes(value: int = 128, size: tuple[int, int] = (64, 48), mode: str = "L") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn in a background thread, stopped at teardown."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
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
