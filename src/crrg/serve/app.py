"""The report service: one model loaded once, a bounded queue, timeouts, API keys, FHIR output.

Request flow: body-size limit (ASGI middleware) -> API key -> queue slot (429 when full) -> decode
images in a worker thread (decode timeout) -> ``generate_report`` in a worker thread (inference
timeout) -> JSON or FHIR. Each request owns its inputs and its future, so concurrent requests never
mix results. A slot is released when the worker actually finishes, not when a request times out,
so a stuck model cannot be flooded with more work than ``max_queue``.

Logs carry a request id, image count, byte sizes, status and timings: never file names, DICOM
patient fields or report text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse

from crrg import __version__
from crrg.errors import CrrgError, ImageError, InputError
from crrg.reporting import GeneratedReport, StudyInput
from crrg.serve.fhir import diagnostic_report
from crrg.serve.inputs import DecodedImage, decode_upload
from crrg.serve.security import BodyLimitMiddleware, BodyTooLarge, key_is_valid, presented_key

log = logging.getLogger("crrg.serve")

DISCLAIMER = "Machine-generated draft for research. Not for clinical use; a radiologist must review every report."


@dataclass
class ServiceLimits:
    max_upload_bytes: int = 32 * 1024 * 1024
    max_images: int = 2
    decode_timeout_s: float = 15.0
    inference_timeout_s: float = 60.0
    max_queue: int = 8  # requests decoding, waiting for or running inference
    workers: int = 1  # inference threads; torch already uses several cores per call
    max_pixels: int = 60_000_000


@dataclass
class ServiceConfig:
    api_keys: frozenset[str] = frozenset()  # empty: no key required (only sensible on 127.0.0.1)
    cors_origins: tuple[str, ...] = ()
    limits: ServiceLimits = field(default_factory=ServiceLimits)


class QueueFull(Exception):
    pass


class ReportService:
    """Holds the shared model and the bounded worker pool."""

    def __init__(self, generator: Any, model_name: str, model_version: str, limits: ServiceLimits):
        self.generator = generator
        self.model_name = model_name
        self.model_version = model_version
        self.limits = limits
        self._decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="crrg-decode")
        self._infer_pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="crrg-infer")
        self._busy = 0  # touched only from the event loop thread

    def acquire(self) -> None:
        if self._busy >= self.limits.max_queue:
            raise QueueFull()
        self._busy += 1

    def release_when_done(self, future: asyncio.Future | None) -> None:
        """Free the slot when the work really ends (a timed-out thread keeps its slot until it stops)."""
        if future is None or future.done():
            self._busy -= 1
        else:
            future.add_done_callback(lambda _f: self._release())

    def _release(self) -> None:
        self._busy -= 1

    async def run(self, pool: ThreadPoolExecutor, fn: Callable, timeout: float) -> tuple[Any, asyncio.Future]:
        future = asyncio.get_running_loop().run_in_executor(pool, fn)
        return await asyncio.wait_for(asyncio.shield(future), timeout), future

    def decode(self, uploads: list[tuple[bytes, str | None]]) -> list[DecodedImage]:
        return [decode_upload(data, view_hint, self.limits.max_pixels) for data, view_hint in uploads]

    def infer(self, images: list[DecodedImage], indication: str) -> GeneratedReport:
        study = StudyInput(images=[im.pixels for im in images], views=[im.view for im in images], indication=indication)
        return self.generator.generate_report(study)

    def shutdown(self) -> None:
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._infer_pool.shutdown(wait=False, cancel_futures=True)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _preview_png(pixels: np.ndarray, max_side: int = 1024) -> tuple[str, float]:
    """8-bit PNG of the decoded image for the viewer (base64), and its scale relative to the original."""
    from PIL import Image

    h, w = pixels.shape
    scale = min(1.0, max_side / max(h, w))
    image = Image.fromarray(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if scale < 1.0:
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii"), scale


def create_app(generator: Any, model_name: str, model_version: str = __version__,
               config: ServiceConfig | None = None) -> FastAPI:
    """Build the FastAPI app around an already-loaded generator (anything with ``generate_report``)."""
    config = config or ServiceConfig()
    limits = config.limits
    service = ReportService(generator, model_name, model_version, limits)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        service.shutdown()

    app = FastAPI(title="crrg report service", version=__version__, lifespan=lifespan,
                  description="Chest radiograph report generation. " + DISCLAIMER)
    app.state.service = service
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])

    def unauthorized(request: Request) -> JSONResponse | None:
        if config.api_keys and not key_is_valid(presented_key(request.headers), config.api_keys):
            return _error(401, "missing or invalid API key (send 'Authorization: Bearer KEY' or 'X-API-Key: KEY')",
                          {"WWW-Authenticate": "Bearer"})
        return None

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict:
        return {"status": "ok", "model": model_name, "version": model_version, "busy": service._busy}

    @app.get("/v1/models", tags=["service"])
    async def models(request: Request):
        if (denied := unauthorized(request)) is not None:
            return denied
        return {"models": [{"name": model_name, "version": model_version, "default": True}]}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def viewer() -> str:
        return (resources.files("crrg.serve") / "static" / "index.html").read_text(encoding="utf-8")

    report_body = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "properties": {
            "image": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": "one image, or a frontal and a lateral image of one study (PNG, JPEG or DICOM)"},
            "frontal": {"type": "string", "format": "binary"},
            "lateral": {"type": "string", "format": "binary"},
            "indication": {"type": "string", "description": "optional clinical indication"},
        }}}}}}

    @app.post("/v1/report", tags=["report"], openapi_extra=report_body)
    async def report(request: Request, format: str = "json", preview: bool = False):
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex[:12]
        if (denied := unauthorized(request)) is not None:
            log.info("request %s: 401", rid)
            return denied
        if format not in ("json", "fhir"):
            return _error(400, f"format must be 'json' or 'fhir', not {format!r}")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return _error(415, "send the image(s) as multipart/form-data (fields 'image', or 'frontal' and 'lateral')")
        try:
            form = await request.form(max_files=limits.max_images + 1, max_fields=8)
        except BodyTooLarge:
            return _error(413, f"upload too large: the limit is {limits.max_upload_bytes} bytes")
        except Exception as exc:  # malformed multipart: the client's fault
            return _error(400, f"could not parse the multipart body: {exc}")
        uploads: list[tuple[bytes, str | None]] = []
        for field_name, hint in (("frontal", "frontal"), ("lateral", "lateral"), ("image", None)):
            for item in form.getlist(field_name):
                if isinstance(item, str):
                    return _error(400, f"field {field_name!r} must be a file upload, not text")
                uploads.append((await item.read(), hint))
        indication = form.get("indication") or ""
        if not isinstance(indication, str):
            return _error(400, "field 'indication' must be text")
        if not uploads:
            return _error(400, "no image: send a file in the 'image' field (or 'frontal' and 'lateral')")
        if len(uploads) > limits.max_images:
            return _error(400, f"at most {limits.max_images} images per study (a frontal and a lateral)")
        if any(len(data) == 0 for data, _ in uploads):
            return _error(400, "an uploaded file is empty")
        try:
            service.acquire()
        except QueueFull:
            log.info("request %s: 429 queue full", rid)
            return _error(429, "the service is busy; retry shortly", {"Retry-After": "1"})
        future = None
        try:
            t_decode = time.perf_counter()
            images, future = await service.run(service._decode_pool, lambda: service.decode(uploads), limits.decode_timeout_s)
            t_infer = time.perf_counter()
            result, future = await service.run(service._infer_pool, lambda: service.infer(images, indication[:1000]),
                                               limits.inference_timeout_s)
            t_done = time.perf_counter()
        except asyncio.TimeoutError:
            log.warning("request %s: 504 timeout", rid)
            return _error(504, "the request timed out while decoding or generating; try a smaller image or retry later")
        except (ImageError, InputError) as exc:
            log.info("request %s: 4xx bad input", rid)
            status = 415 if "modality" in str(exc).lower() or "not an image" in str(exc).lower() else 400
            return _error(status, str(exc))
        except CrrgError as exc:
            return _error(400, str(exc))
        finally:
            service.release_when_done(future)
        timings = {"decode_ms": (t_infer - t_decode) * 1e3, "inference_ms": (t_done - t_infer) * 1e3,
                   "total_ms": (time.perf_counter() - t0) * 1e3}
        log.info("request %s: 200, %d image(s), %d bytes, %.0f ms", rid, len(uploads),
                 sum(len(d) for d, _ in uploads), timings["total_ms"])
        if format == "fhir":
            return JSONResponse(diagnostic_report(result, model_version), media_type="application/fhir+json")
        body = result.to_dict()
        body.update({"id": rid, "model": {"name": model_name, "version": model_version}, "timings_ms": timings,
                     "disclaimer": DISCLAIMER,
                     "images": [{"view": im.view, "width": im.pixels.shape[1], "height": im.pixels.shape[0]} for im in images]})
        if preview:
            for entry, im in zip(body["images"], images):
                entry["preview_png"], entry["preview_scale"] = _preview_png(im.pixels)
        return body

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # a bug, not bad input: no details leak
        log.exception("unexpected error")
        return _error(500, "internal error")

    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_upload_bytes)
    return app
