"""Registry of named model configurations and the one loader/saver for weights.

A *family* (``clip``, ``rrg``, ``blip``, ...) is a Python builder ``build(config: dict) -> nn.Module``
registered with :func:`register_family`. A *model name* (``clip-resnet18-minilm``) is a JSON file in
``crrg/models/configs/`` holding ``{"family": ..., ...config}``. Choosing a model never means editing
code: ``create_model(name, pretrained=PATH_OR_HUB_ID)``.

A saved model is a folder with ``config.json`` (the full config, including ``family``, and
``files``: every other file the model needs, e.g. ``tokenizer/``, ``thresholds.json``,
``decoding.json``, ``classifier/``) and ``model.safetensors``. :func:`load_pretrained` accepts such a
folder, the name of a model bundled in ``crrg/models/pretrained/``, or a Hugging Face hub repo id
holding the same files (``huggingface_hub`` downloads config.json first, then every file it lists).
Loading a folder and loading from the hub therefore fetch the same set. No config runs code.

Every model built here carries its config as ``model.crrg_config`` so it can be saved again as-is.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Callable
from urllib.error import URLError

from crrg.errors import ConfigError, CrrgError, InputError
from crrg.io import atomic_save_file, atomic_write_json

# The trained model shipped in crrg/models/pretrained/ that commands use when no --model is given.
DEFAULT_MODEL = "crrg-default"

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

_FAMILIES: dict[str, Callable[[dict], Any]] = {}
# Modules that register families when imported; imported lazily so `crrg --help` stays fast.
_FAMILY_MODULES = {
    "clip": "crrg.clip.model",
    "classifier": "crrg.clip.classifier",
    "rrg": "crrg.rrg.model",
    "blip": "crrg.blip.model",
}


def register_family(name: str) -> Callable[[Callable[[dict], Any]], Callable[[dict], Any]]:
    def decorator(builder: Callable[[dict], Any]) -> Callable[[dict], Any]:
        _FAMILIES[name] = builder
        return builder

    return decorator


def register_family_module(family: str, module: str) -> None:
    """Let a plug-in family be imported on first use (``module`` must call :func:`register_family`)."""
    _FAMILY_MODULES[family] = module


def _builder(family: str) -> Callable[[dict], Any]:
    if family not in _FAMILIES and family in _FAMILY_MODULES:
        importlib.import_module(_FAMILY_MODULES[family])
    if family not in _FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; known: {sorted(set(_FAMILIES) | set(_FAMILY_MODULES))}")
    return _FAMILIES[family]


def _config_dir():
    return resources.files("crrg.models") / "configs"


def list_models() -> list[str]:
    """Names of the model configurations shipped with crrg."""
    return sorted(p.name[: -len(".json")] for p in _config_dir().iterdir() if p.name.endswith(".json"))


def get_model_config(name: str) -> dict:
    path = _config_dir() / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"unknown model {name!r}; `crrg models list` shows the known ones: {', '.join(list_models())}")
    return json.loads(path.read_text())


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def build_model(config: dict):
    """Build an untrained model from a full config dict (must contain ``family``)."""
    if not isinstance(config, dict) or "family" not in config:
        raise ConfigError("model config has no 'family' key")
    from crrg.models.schema import validate_config

    validate_config(config)  # unknown keys, wrong types and absurd sizes fail before anything is allocated
    builder = _builder(config["family"])
    try:
        model = builder(config)
    except (URLError, ConnectionError, TimeoutError) as exc:  # pretrained weights fetched while building
        raise ConfigError(f"building this {config['family']} model downloads pretrained weights, which failed "
                          f"({getattr(exc, 'reason', exc)}); connect to the internet once, or set the config's "
                          "pretrained weights off (e.g. detector.pretrained_backbone: false, language.init: null)") from None
    model.crrg_config = copy.deepcopy(config)
    return model


def create_model(name_or_config: str | dict, pretrained: str | os.PathLike | None = None, **overrides):
    """Create a model by registry name (or from a config dict), optionally loading weights.

    ``pretrained`` is a saved-model folder or hub id (see :func:`load_pretrained`); its weights are
    loaded into the model built from the named config, so shapes must agree.
    """
    config = get_model_config(name_or_config) if isinstance(name_or_config, str) else dict(name_or_config)
    config = _merge(config, overrides)
    model = build_model(config)
    if pretrained is not None:
        state = _load_state(_locate(pretrained))
        _load_into(model, state, str(pretrained))
    return model


def bundled_models_dir() -> Path:
    """Folder of the trained models shipped inside the package (``crrg models list`` shows them)."""
    return Path(str(resources.files("crrg.models"))) / "pretrained"


def list_bundled_models() -> list[str]:
    root = bundled_models_dir()
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_FILE).is_file()) if root.is_dir() else []


def _locate(path_or_id: str | os.PathLike) -> Path:
    path = Path(path_or_id)
    bundled = bundled_models_dir() / str(path_or_id)
    if not path.exists() and "/" not in str(path_or_id) and (bundled / CONFIG_FILE).is_file():
        return bundled
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise InputError(f"{path} is not a saved crrg model: it needs {CONFIG_FILE} and {WEIGHTS_FILE}")
        return path
    if path.exists():
        raise InputError(f"{path} is a file; pass the folder that holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    text = str(path_or_id)
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise InputError(f"model {text!r} is neither a local folder nor a hub id of the form owner/name")
    return _download(text)


def _download(repo_id: str) -> Path:
    """A hub model: config.json first, then the weights and every file its ``files`` list names (a
    folder saved before that list existed: every file of the repository)."""
    try:
        from huggingface_hub import snapshot_download

        first = Path(snapshot_download(repo_id=repo_id, allow_patterns=[CONFIG_FILE]))
        listed = read_config(first / CONFIG_FILE).get("files")
        patterns = None if listed is None else [CONFIG_FILE, WEIGHTS_FILE, *listed]
        return Path(snapshot_download(repo_id=repo_id, allow_patterns=patterns))
    except CrrgError:
        raise
    except Exception as exc:  # network, auth, missing repo: all user-facing
        raise InputError(f"could not download model {repo_id!r} from the Hugging Face hub: {exc}") from None


def read_config(path: Path) -> dict:
    """A saved model's config.json, or one clear line on what is wrong with it."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); the saved model is damaged, copy or download it again") from None
    if not isinstance(config, dict):
        raise InputError(f"{path} holds a JSON {type(config).__name__}, not a model config object")
    return config


def _check_files(folder: Path, config: dict) -> None:
    """Every file config.json lists must be there: a half-copied or half-downloaded folder fails here,
    by name, not later inside a tokenizer or a child model."""
    missing = [f for f in config.get("files") or [] if not (folder / f).exists()]
    if missing:
        raise InputError(f"{folder} lacks {len(missing)} file(s) its config.json lists (e.g. {missing[:3]}); "
                         "copy or download the whole model folder again")


def _load_state(folder: Path) -> dict:
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    try:
        return load_file(str(path))
    except Exception as exc:  # truncated or corrupt: safetensors raises its own error types
        raise InputError(f"{path} is damaged or truncated ({str(exc).splitlines()[0][:160]}); "
                         "copy or download the model again") from None


def _load_into(model, state: dict, source: str) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"weights in {source} do not fit the model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )


def load_pretrained(path_or_id: str | os.PathLike, map_location: str | None = "cpu"):
    """Load a saved model (bundled name, folder or hub id): build it from config.json, then load weights.

    ``map_location`` is the device the model ends on (None: leave it where it was built)."""
    folder = _locate(path_or_id)
    config = read_config(folder / CONFIG_FILE)
    _check_files(folder, config)
    model = build_model(config)
    _load_into(model, _load_state(folder), str(path_or_id))
    if hasattr(model, "on_loaded"):
        model.on_loaded(folder)  # families with extra files (tokenizer, thresholds, children) read them here
    if map_location is not None:
        model = model.to(map_location)
    return model.eval()


def save_pretrained(model, out_dir: str | os.PathLike, config: dict | None = None, dtype=None) -> Path:
    """Save ``model`` as one declared artifact in ``out_dir``: model.safetensors, the extra files the
    model writes (``on_saved``: tokenizer, thresholds, decoding defaults, children's folders) and last
    config.json, which lists them all (``files``). Each file is written atomically.

    ``dtype`` (e.g. ``torch.float16``) stores the floating-point tensors in that type to halve a
    shipped model; loading into float32 parameters casts them back. Children saved in their own
    folders (``model.weights_apart()``) are left out of model.safetensors.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = config if config is not None else getattr(model, "crrg_config", None)
    if config is None:
        raise ConfigError("model has no crrg_config; pass config= to save_pretrained")
    apart = tuple(getattr(model, "weights_apart", lambda: ())())
    # safetensors refuses shared storage (tied embeddings): store contiguous copies.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
             if not (apart and k.startswith(apart))}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    atomic_save_file(out / WEIGHTS_FILE, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write_json(out / CONFIG_FILE, config)
    if hasattr(model, "on_saved"):
        model.on_saved(out, dtype=dtype)  # extra files; a model saved inside this one gets the same dtype
    final = read_config(out / CONFIG_FILE)  # on_saved may have rewritten it (a portable config)
    final.update(getattr(model, "artifact_config", lambda: {})())
    final["files"] = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                            if p.is_file() and p != out / CONFIG_FILE)
    atomic_write_json(out / CONFIG_FILE, final)
    return out
