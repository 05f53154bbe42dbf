"""The service's OpenAPI document and its ``/docs`` page, served without any CDN.

FastAPI's stock ``/docs`` page loads Swagger UI from a CDN with no integrity check: whoever controls
that CDN (or the network path to it) runs script in the service's origin. Here the Swagger UI files
come from the ``swagger-ui-py`` package (Swagger UI 5, which reads OpenAPI 3.1) and are served by the service itself under a strict
Content-Security-Policy; without that package ``/docs`` is off and ``/openapi.json`` stays.

The document declares what clients must know: the API-key schemes (bearer token or ``X-API-Key``)
and every error status the service answers, each with the same ``{"detail": ...}`` body.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, Response

DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
DOCS_ASSETS = {"swagger-ui-bundle.js": "application/javascript", "swagger-ui.css": "text/css"}

ERROR_RESPONSES: dict[int, str] = {
    400: "Bad request: malformed multipart body, no or too many images, an image that cannot be decoded, "
         "or a Host header that does not name this service.",
    401: "Missing or invalid API key (only when the service was started with --api-key-file).",
    403: "A browser request from another site (cross-site POSTs are refused).",
    408: "The request body did not arrive within the body timeout.",
    413: "The request body is larger than the upload limit.",
    415: "Not multipart/form-data, or a DICOM of a modality other than a radiograph.",
    422: "Invalid query parameters, or an image that is not a chest radiograph.",
    429: "Every request slot is taken (requests uploading, decoding or being generated); retry after the "
         "number of seconds in Retry-After.",
    503: "The server is at its connection limit.",
    504: "Decoding or report generation took longer than the timeout.",
}
SECURED_PATHS = ("/v1/report", "/v1/models")


def swagger_assets_dir() -> Path | None:
    """The Swagger UI files of the ``swagger-ui-py`` package, or None when it is not installed."""
    try:
        import swagger_ui
    except ImportError:
        return None
    folder = Path(swagger_ui.__file__).parent / "static"
    return folder if all((folder / name).is_file() for name in DOCS_ASSETS) else None


def decoding_parameters() -> list[dict[str, Any]]:
    """The decoding options (:class:`crrg.generation.DecodingOptions`) as optional query parameters."""
    from dataclasses import MISSING, fields
    from enum import Enum

    from crrg.generation import DecodingOptions

    out = []
    for f in fields(DecodingOptions):
        default = f.default if f.default is not MISSING else None
        kind = str(f.type)
        if isinstance(default, Enum):
            schema: dict[str, Any] = {"type": "string", "enum": [m.value for m in type(default)], "default": default.value}
        elif "bool" in kind:
            schema = {"type": "boolean", "default": default}
        elif "int" in kind:
            schema = {"type": "integer"} if default is None else {"type": "integer", "default": default}
        else:
            schema = {"type": "number", "default": default}
        out.append({"name": f.name, "in": "query", "required": False, "schema": schema,
                    "description": "decoding option (crrg.generation.DecodingOptions); absent: the model's default"})
    return out


def install_openapi(app: FastAPI, keys_required: bool) -> None:
    """Replace ``app.openapi`` by one that adds security schemes and the error responses."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["Error"] = {
            "type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}
        components["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
            "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        security: list[dict] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
        for path in SECURED_PATHS:
            for operation in schema.get("paths", {}).get(path, {}).values():
                # {} = no key needed: the service was started without --api-key-file
                operation["security"] = security if keys_required else [*security, {}]
                responses = operation.setdefault("responses", {})
                for status, text in ERROR_RESPONSES.items():
                    if path != "/v1/report" and status not in (400, 401, 403, 503):
                        continue
                    entry: dict[str, Any] = {"description": text, "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                    if status == 429:
                        entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
                    responses[str(status)] = entry
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_docs(app: FastAPI) -> bool:
    """``/docs`` with locally served Swagger UI; False (no /docs) when the package is missing."""
    assets = swagger_assets_dir()
    if assets is None:
        return False
    page = (resources.files("crrg.serve") / "static" / "docs.html").read_text(encoding="utf-8")
    init = (resources.files("crrg.serve") / "static" / "docs-init.js").read_text(encoding="utf-8")
    headers = {"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    @app.get("/docs/assets/docs-init.js", include_in_schema=False)
    async def docs_init() -> Response:
        return Response(init, media_type="application/javascript", headers=headers)

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        if name not in DOCS_ASSETS:  # a fixed list: no path from the request reaches the file system
            return Response(status_code=404)
        return FileResponse(assets / name, media_type=DOCS_ASSETS[name], headers=headers)

    return True
