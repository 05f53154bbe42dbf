"""``crrg serve``: the HTTP report service with its web viewer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from crrg.cli.common import info


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        model: str = typer.Option(..., "--model", "-m", help="Bundled model name, saved-model folder or hub id."),
        host: str = typer.Option("127.0.0.1", help="Address to bind. Anything but 127.0.0.1 exposes the service: use --api-key-file."),
        port: int = typer.Option(8000, help="TCP port."),
        api_key_file: Optional[Path] = typer.Option(None, help="File with one API key per line; requests without a valid key get 401."),
        cors_origin: list[str] = typer.Option([], help="Allow browser calls from this origin (repeatable). CORS is off by default."),
        max_upload_mb: float = typer.Option(32.0, help="Largest accepted request body, in MB."),
        max_queue: int = typer.Option(8, help="Requests in flight before the service answers 429."),
        timeout: float = typer.Option(60.0, help="Inference timeout per request, in seconds."),
    ) -> None:
        """Serve POST /v1/report (JSON or ?format=fhir), GET /healthz, GET /v1/models and the web viewer at /."""
        import uvicorn

        from crrg.errors import ConfigError
        from crrg.models.registry import load_pretrained
        from crrg.serve.app import ServiceConfig, ServiceLimits, create_app
        from crrg.serve.security import read_api_keys

        keys = read_api_keys(api_key_file) if api_key_file else frozenset()
        if host not in ("127.0.0.1", "localhost", "::1") and not keys:
            raise ConfigError(f"refusing to bind {host} without --api-key-file: anyone on the network could get reports")
        generator = load_pretrained(model)
        if not hasattr(generator, "generate_report"):
            raise ConfigError(f"model {model!r} does not generate reports (its family is {generator.crrg_config.get('family')!r})")
        version = str(generator.crrg_config.get("version", "unversioned"))
        limits = ServiceLimits(max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_queue=max_queue, inference_timeout_s=timeout)
        application = create_app(generator, Path(model).name, version,
                                 ServiceConfig(api_keys=keys, cors_origins=tuple(cors_origin), limits=limits))
        info(f"serving {model} on http://{host}:{port}  (viewer at /, API docs at /docs)")
        uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)
