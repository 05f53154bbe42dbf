"""``crrg models list`` / ``crrg models info``: what models exist, without loading any of them.

Two kinds of names: *configurations* shipped in ``crrg/models/configs/*.json`` (architecture only,
``create_model(name)``) and *bundled pretrained* models in ``crrg/models/pretrained/<name>/``
(config.json + model.safetensors, ``load_pretrained``). ``info`` also accepts any saved-model
folder, e.g. ``runs/x/model`` written by ``crrg train``. Weights are inspected through the
safetensors header only, so ``info`` on a large model is instant.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import typer

from crrg.errors import ConfigError, InputError

models_app = typer.Typer(help="List and inspect model configurations and saved models.", no_args_is_help=True)


def pretrained_dir() -> Path | None:
    """The folder of bundled pretrained models, if this installation has one."""
    folder = Path(str(resources.files("crrg.models") / "pretrained"))
    return folder if folder.is_dir() else None


def bundled_models() -> dict[str, Path]:
    folder = pretrained_dir()
    if folder is None:
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if (p / "config.json").is_file()}


def _weights_summary(weights: Path) -> dict[str, Any]:
    from safetensors import safe_open

    count, tensors, dtypes = 0, 0, set()
    try:
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():
                piece = handle.get_slice(key)
                shape = piece.get_shape()
                n = 1
                for dim in shape:
                    n *= dim
                count += n
                tensors += 1
                dtypes.add(str(piece.get_dtype()))
    except Exception as exc:  # a damaged file is the user's problem to fix, not a traceback
        raise InputError(f"cannot read weights {weights}: {exc}") from None
    return {"parameters": count, "tensors": tensors, "dtypes": sorted(dtypes), "bytes": weights.stat().st_size}


def saved_model_info(folder: Path) -> dict[str, Any]:
    """Describe a saved-model folder (config.json + model.safetensors) from its files."""
    from crrg.models.registry import CONFIG_FILE, WEIGHTS_FILE

    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise InputError(f"{folder} is not a saved crrg model: it has no {CONFIG_FILE}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{config_path} is not valid JSON: {exc}") from None
    info: dict[str, Any] = {"path": str(folder), "family": config.get("family") if isinstance(config, dict) else None,
                            "config": config, "typed_config": typed(config)}
    if info["family"] == "rrg":
        from crrg.generation.options import DecodingOptions

        info["decoding"] = DecodingOptions.load(folder, config).to_dict()  # decoding.json, or an old config's keys
    weights = folder / WEIGHTS_FILE
    info["weights"] = _weights_summary(weights) if weights.is_file() else None
    info["files"] = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return info


def typed(config: Any) -> dict[str, Any] | None:
    """The family's typed config with every default filled in (:mod:`crrg.models.schema`); a config
    that does not validate is an error naming the key."""
    from crrg.models.schema import typed_dict

    return typed_dict(config) if isinstance(config, dict) else None


def describe(name_or_path: str) -> dict[str, Any]:
    """Info on a registry name, a bundled pretrained name or a saved-model folder."""
    from crrg.models.registry import get_model_config, list_models

    path = Path(name_or_path)
    if path.is_dir():
        return {"kind": "saved model", **saved_model_info(path)}
    bundled = bundled_models()
    if name_or_path in bundled:
        return {"kind": "bundled pretrained", "name": name_or_path, **saved_model_info(bundled[name_or_path])}
    if name_or_path in list_models():
        config = get_model_config(name_or_path)
        return {"kind": "configuration", "name": name_or_path, "family": config.get("family"), "config": config,
                "typed_config": typed(config)}
    if path.exists():
        raise InputError(f"{path} is a file; pass a saved-model folder (config.json + model.safetensors)")
    known = sorted(set(list_models()) | set(bundled))
    raise ConfigError(f"{name_or_path!r} is neither a model name nor a saved-model folder; known names: {', '.join(known) or 'none'}")


@models_app.command("list")
def list_command() -> None:
    """Names of model configurations and bundled pretrained models, one per line with its family."""
    from crrg.models.registry import get_model_config, list_models

    for name in list_models():
        typer.echo(f"{name}\t{get_model_config(name).get('family', '?')}\tconfiguration")
    for name, folder in bundled_models().items():
        try:
            family = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("family", "?")
        except (json.JSONDecodeError, AttributeError):
            family = "?"
        typer.echo(f"{name}\t{family}\tpretrained")


@models_app.command("info")
def info_command(name_or_path: str = typer.Argument(..., help="Model name or saved-model folder.")) -> None:
    """Config, parameter count and files of a model, as JSON."""
    typer.echo(json.dumps(describe(name_or_path), indent=2, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
