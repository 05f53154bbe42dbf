"""``crrg serve``: the HTTP report service with its web viewer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from crrg.cli.common import info
from crrg.models.registry import DEFAULT_MODEL


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Bundled model name, saved-model folder or hub id."),
        host: str = typer.Option("127.0.0.1", help="Address to bind. Anything but 127.0.0.1 exposes the service: use --api-key-file."),
        port: int = typer.Option(8000, help="TCP port."),
        api_key_file: Optional[Path] = typer.Option(None, help="File with one API key per line; requests without a valid key get 401."),
        cors_origin: list[str] = typer.Option([], help="Allow browser calls from this origin (repeatable). CORS is off by default."),
        allowed_host: list[str] = typer.Option([], help="Also answer requests whose Host header is this name (repeatable; "
                                                         "default: localhost names and the bound address)."),
        max_upload_mb: float = typer.Option(32.0, help="Largest accepted request body, in MB."),
        max_queue: int = typer.Option(8, help="Requests in flight (uploading, decoding, generating) before the service answers 429."),
        timeout: float = typer.Option(60.0, help="Inference timeout per request, in seconds."),
        body_timeout: float = typer.Option(20.0, help="Seconds a request body may take to arrive (408 after)."),
        header_timeout: float = typer.Option(10.0, help="Seconds a client may take to send a request's headers before it is disconnected."),
        max_connections: int = typer.Option(512, help="Open connections at most (503 beyond)."),
        device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto (a GPU when there is one, else the CPU)."),
        no_gate: bool = typer.Option(False, "--no-gate", help="Research use: report on images the chest-radiograph gate "
                                                              "would refuse (a CT or MR DICOM is still refused)."),
    ) -> None:
        """Serve POST /v1/report (JSON or ?format=fhir; decoding options as query parameters, e.g. ?beams=4),
        GET /healthz, GET /v1/models, the API docs at /docs and the web viewer at /."""
        from crrg.errors import ConfigError
        from crrg.generation import load_generator
        from crrg.serve.app import ServiceConfig, ServiceLimits, create_app
        from crrg.serve.hardening import allowed_hosts_for
        from crrg.serve.security import read_api_keys
        from crrg.serve.server import ConnectionLimits, serve as run_server

        keys = read_api_keys(api_key_file) if api_key_file else frozenset()
        if host not in ("127.0.0.1", "localhost", "::1") and not keys:
            raise ConfigError(f"refusing to bind {host} without --api-key-file: anyone on the network could get reports")
        if min(max_queue, max_connections) < 1 or min(timeout, body_timeout, header_timeout, max_upload_mb) <= 0:
            raise ConfigError("--max-queue, --max-connections, the timeouts and --max-upload-mb must be positive")
        generator = load_generator(model, device=device)
        version = str(generator.crrg_config.get("version", "unversioned"))
        limits = ServiceLimits(max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_queue=max_queue,
                               inference_timeout_s=timeout, body_timeout_s=body_timeout)
        config = ServiceConfig(api_keys=keys, cors_origins=tuple(cors_origin), gate=not no_gate,
                               allowed_hosts=allowed_hosts_for(host, tuple(allowed_host)), limits=limits)
        application = create_app(generator, Path(model).name, version, config)
        info(f"serving {model} on http://{host}:{port}  (viewer at /, API docs at /docs)")
        run_server(application, host, port, ConnectionLimits(header_timeout_s=header_timeout, max_connections=max_connections))
