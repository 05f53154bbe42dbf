"""The report service: one model loaded once, a bounded queue, timeouts, API keys, FHIR output.

Request flow: Host / cross-site checks and security headers (:mod:`crrg.serve.hardening`) ->
declared body size (413) -> API key (401) -> a request slot (429 when every slot is taken, answered
before a byte of the body is read) -> the multipart body, streamed under the size limit (413) and a
body deadline (408) -> decode in a worker thread (decode timeout, 504) -> ``generate_report`` in a
worker thread (inference timeout, 504) -> JSON or FHIR. Each request owns its inputs and its job,
so concurrent requests never mix results. A slot is freed when its last job has really ended, not
when the request times out (:mod:`crrg.serve.admission`), so ``/healthz`` ``busy`` counts work
still running and a stuck model is never handed more than ``max_queue`` jobs.

Logs carry a request id, image count, byte sizes, status and timings: never file names, DICOM
patient fields or report text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import re
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse

from crrg import __version__
from crrg.errors import CrrgError
from crrg.image import DEFAULT_MAX_PIXELS
from crrg.reporting import GeneratedReport, StudyInput
from crrg.serve.admission import Admission, QueueFull, Slot
from crrg.serve.errors import http_status
from crrg.serve.fhir import diagnostic_report
from crrg.serve.hardening import LOCAL_HOSTS, WebGuardMiddleware, WebPolicy
from crrg.serve.inputs import DecodedImage, decode_upload
from crrg.serve.memory import Trimmer
from crrg.serve.openapi import decoding_parameters, install_docs, install_openapi
from crrg.serve.security import BodyLimitMiddleware, key_is_valid, presented_key
from crrg.serve.uploads import FormProblem, Upload, parse_form, read_body, upload_from_parts

log = logging.getLogger("crrg.serve")

OWN_PARAMS = ("format", "preview")  # every other query parameter is a decoding option
DISCLAIMER = "Machine-generated draft for research. Not for clinical use; a radiologist must review every report."


@dataclass
class ServiceLimits:
    max_upload_bytes: int = 32 * 1024 * 1024
    """Largest request body; checked against Content-Length first, then while the body streams in (413)."""
    max_images: int = 2
    decode_timeout_s: float = 15.0
    inference_timeout_s: float = 60.0
    body_timeout_s: float = 20.0
    """The whole request body must arrive within this many seconds of admission (408): a trickling upload
    would otherwise hold its slot forever."""
    max_queue: int = 8
    """Requests in flight (uploading, decoding, waiting for or running inference, or timed out with their
    job still running); one more is answered 429 at once."""
    workers: int = 1  # inference threads; torch already uses several cores per call
    max_pixels: int = DEFAULT_MAX_PIXELS  # the image loader's limit (what the models can use)
    max_search: int = 8
    """Largest ``beams``, ``consensus`` and ``candidates`` a request may ask for (422 beyond): one request
    must not buy minutes of compute."""
    max_new_tokens: int = 256
    """Largest ``max_new_tokens`` a request may ask for."""


@dataclass
class ServiceConfig:
    api_keys: frozenset[str] = frozenset()  # empty: no key required (only sensible on 127.0.0.1)
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = LOCAL_HOSTS
    """Host header names this service answers to (DNS-rebinding guard); ("*",) accepts any."""
    gate: bool = True
    """Refuse images that are not chest radiographs (422), as ``crrg report`` does; False: research use."""
    limits: ServiceLimits = field(default_factory=ServiceLimits)


class ReportService:
    """Holds the shared model, the request slots and the worker pools."""

    def __init__(self, generator: Any, model_name: str, model_version: str, limits: ServiceLimits,
                 gate: bool = True):
        self.generator = generator
        self.gate = gate
        self.model_name = model_name
        self.model_version = model_version
        self.limits = limits
        self._decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="crrg-decode")
        self._trimmer = Trimmer()
        self.admission = Admission(limits.max_queue, on_idle=self._when_idle)
        self._infer_pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="crrg-infer")

    def _when_idle(self) -> None:
        """Nothing in flight: hand freed memory back to the system, off the event loop."""
        with contextlib.suppress(RuntimeError):  # the pool is shut down
            self._decode_pool.submit(self._trimmer.trim)

    def decode(self, body: bytearray, content_type: str) -> tuple[Upload, list[DecodedImage]]:
        """Multipart body -> the upload (files, indication) and its decoded images (worker thread)."""
        try:
            upload = upload_from_parts(parse_form(body, content_type, self.limits.max_images + 8), self.limits.max_images)
        finally:
            del body[:]  # the parts hold their own copies; the raw body is not needed any more
        return upload, [decode_upload(data, view_hint, self.limits.max_pixels, self.gate) for data, view_hint in upload.files]

    def infer(self, images: list[DecodedImage], indication: str, options: dict[str, Any]) -> GeneratedReport:
        study = StudyInput(images=[im.pixels for im in images], views=[im.view for im in images], indication=indication)
        # no options: the generator's own defaults (a bare model's generate_report may take no keywords)
        return self.generator.generate_report(study, **options) if options else self.generator.generate_report(study)

    def decoding_options(self, query: dict[str, str]) -> dict[str, Any]:
        """Query parameters -> checked decoding overrides (``GenerationError`` names a bad one: 422)."""
        if not query:
            return {}
        from crrg.generation import GenerationError, options_from_query

        options = options_from_query(query)
        limits = self.limits
        too_big = [f"{key}={options[key]} (at most {limits.max_search})" for key in ("beams", "consensus", "candidates")
                   if (options.get(key) or 0) > limits.max_search]
        if (options.get("max_new_tokens") or 0) > limits.max_new_tokens:
            too_big.append(f"max_new_tokens={options['max_new_tokens']} (at most {limits.max_new_tokens})")
        if too_big:
            raise GenerationError("this service limits decoding: " + ", ".join(too_big))
        return options

    async def run_report(self, slot: Slot, body: bytearray, content_type: str, options: dict[str, Any]):
        """Parse and decode, then generate, each in its pool under its timeout; returns the upload, its
        images, the report and timings."""
        t0 = time.perf_counter()
        upload, images = await slot.run(self._decode_pool, lambda: self.decode(body, content_type),
                                        self.limits.decode_timeout_s)
        t1 = time.perf_counter()
        indication = upload.indication[:1000]
        result = await slot.run(self._infer_pool, lambda: self.infer(images, indication, options),
                                self.limits.inference_timeout_s)
        t2 = time.perf_counter()
        return upload, images, result, {"decode_ms": (t1 - t0) * 1e3, "inference_ms": (t2 - t1) * 1e3}

    def shutdown(self) -> None:
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._infer_pool.shutdown(wait=False, cancel_futures=True)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _refuse(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """An answer given before the body was read: the connection closes (lingering, see crrg.serve.server)
    so the unread body is dropped rather than parsed."""
    return _error(status, message, {**(headers or {}), "Connection": "close"})


def _failure(rid: str, stage: str, exc: BaseException, limits: ServiceLimits) -> JSONResponse:
    """The answer to a request that failed while its body arrived (``stage`` "body") or in its work."""
    _release_frames(exc)
    if isinstance(exc, asyncio.TimeoutError):
        if stage == "body":
            log.info("request %s: 408 body too slow", rid)
            return _refuse(408, f"the request body did not arrive within {limits.body_timeout_s:g} s")
        log.warning("request %s: 504 timeout", rid)
        return _error(504, "the request timed out while decoding or generating; try a smaller image or retry later")
    status = exc.status if isinstance(exc, FormProblem) else http_status(exc)
    log.info("request %s: %d %s", rid, status, type(exc).__name__)
    # a problem found while the body arrived (413) leaves the rest of it unread: close
    return (_refuse if stage == "body" else _error)(status, str(exc))


def _release_frames(exc: BaseException | None) -> None:
    """Clear the frames of an exception's traceback (and of its causes).

    An exception that came through an asyncio future sits in a reference cycle with the frames it
    passed, and those frames hold the request's buffers (tens of MB for a large upload); cleared,
    the buffers are freed at once instead of whenever the garbage collector next runs a full pass
    (which, with a model loaded, takes long enough to stall every request)."""
    seen = 0
    while exc is not None and seen < 8:
        traceback.clear_frames(exc.__traceback__)
        exc.__traceback__ = None
        exc, seen = exc.__cause__ or exc.__context__, seen + 1


def _page_csp(html: str) -> str:
    """CSP of a page whose only script is inline: that script is allowed by its hash, nothing else runs."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(m.encode()).digest()).decode()}'"
                      for m in re.findall(r"<script>(.*?)</script>", html, flags=re.S))
    return (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; img-src 'self' data: blob:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


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
    service = ReportService(generator, model_name, model_version, limits, config.gate)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        service.shutdown()

    app = FastAPI(title="crrg report service", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, description="Chest radiograph report generation. " + DISCLAIMER)
    app.state.service = service
    install_openapi(app, keys_required=bool(config.api_keys))
    install_docs(app)
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
        return {"status": "ok", "model": model_name, "version": model_version,
                "busy": service.admission.busy, "max_queue": limits.max_queue}

    @app.get("/v1/models", tags=["service"])
    async def models(request: Request):
        if (denied := unauthorized(request)) is not None:
            return denied
        return {"models": [{"name": model_name, "version": model_version, "default": True}]}

    viewer_html = (resources.files("crrg.serve") / "static" / "index.html").read_text(encoding="utf-8")
    viewer_headers = {"Content-Security-Policy": _page_csp(viewer_html)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def viewer() -> HTMLResponse:
        return HTMLResponse(viewer_html, headers=viewer_headers)

    report_body = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "properties": {
            "image": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": "one image, or a frontal and a lateral image of one study (PNG, JPEG or DICOM)"},
            "frontal": {"type": "string", "format": "binary"},
            "lateral": {"type": "string", "format": "binary"},
            "indication": {"type": "string", "description": "optional clinical indication"},
        }}}}}}

    report_body["parameters"] = decoding_parameters()

    @app.post("/v1/report", tags=["report"], openapi_extra=report_body)
    async def report(request: Request, format: str = "json", preview: bool = False):
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex[:12]
        if (denied := unauthorized(request)) is not None:
            log.info("request %s: 401", rid)
            denied.headers["Connection"] = "close"
            return denied
        if format not in ("json", "fhir"):
            return _refuse(400, f"format must be 'json' or 'fhir', not {format!r}")
        try:
            options = service.decoding_options({k: v for k, v in request.query_params.items() if k not in OWN_PARAMS})
        except CrrgError as exc:
            return _refuse(422, str(exc))
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return _refuse(415, "send the image(s) as multipart/form-data (fields 'image', or 'frontal' and 'lateral')")
        try:  # admission before the body: a refused upload is never read
            slot = service.admission.admit()
        except QueueFull:
            log.info("request %s: 429 queue full", rid)
            return _refuse(429, "the service is busy; retry shortly", {"Retry-After": "1"})
        stage = "body"
        try:
            body = await asyncio.wait_for(read_body(request, limits.max_upload_bytes), limits.body_timeout_s)
            stage = "work"
            upload, images, result, timings = await service.run_report(
                slot, body, request.headers.get("content-type", ""), options)
        except (asyncio.TimeoutError, FormProblem, CrrgError) as exc:
            return _failure(rid, stage, exc, limits)
        finally:
            slot.close()
        timings["total_ms"] = (time.perf_counter() - t0) * 1e3
        log.info("request %s: 200, %d image(s), %d bytes, %.0f ms", rid, len(upload.files),
                 sum(len(d) for d, _ in upload.files), timings["total_ms"])
        no_store = {"Cache-Control": "no-store"}
        if format == "fhir":
            return JSONResponse(diagnostic_report(result, model_version), media_type="application/fhir+json",
                                headers=no_store)
        body = result.to_dict()
        body.update({"id": rid, "model": {"name": model_name, "version": model_version}, "timings_ms": timings,
                     "disclaimer": DISCLAIMER,
                     "images": [{"view": im.view, "width": im.pixels.shape[1], "height": im.pixels.shape[0]} for im in images]})
        if preview:
            for entry, im in zip(body["images"], images):
                entry["preview_png"], entry["preview_scale"] = _preview_png(im.pixels)
        return JSONResponse(jsonable_encoder(body), headers=no_store)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # a bug, not bad input: no details leak
        log.exception("unexpected error")
        return _error(500, "internal error")

    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_upload_bytes)
    app.add_middleware(WebGuardMiddleware, policy=WebPolicy(tuple(config.allowed_hosts), tuple(config.cors_origins)))
    return app
