"""LoRA adapters (peft) for the two fine-tuning stages of ClinicalBLIP, and what each stage trains.

Stage 1 (image-report alignment) trains the Q-Former, its query tokens and projection, plus LoRA on
the image encoder, with the language model frozen. Stage 2 (report generation) adds LoRA to the
language model. Adapters are attached to a named submodule (``vision`` or ``lm``) of the model
(a model may say where each part lives with ``adapter_place(part) -> (owner, attribute)`` and how its
parameters group with ``parameter_group(name)``, as the hub InstructBLIP does); each is stored in peft's own format (``adapter_config.json`` + ``adapter_model.safetensors``) so it
can be shipped or swapped on its own, and can be merged into the base weights for inference.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from torch import nn

from crrg.errors import ConfigError, InputError, reject_unknown_keys
from crrg.io import atomic_save_file, atomic_write_json

log = logging.getLogger(__name__)

ADAPTER_PARTS = ("vision", "lm")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"

# Trainable groups a stage may name. "qformer" covers the Q-Former, query tokens, the projection into
# the language model and the view embeddings: the bridge that every stage trains.
TRAINABLE_GROUPS = ("qformer", "vision", "vision_lora", "lm", "lm_lora", "soft_prompt")
STAGE_DEFAULTS: dict[int, tuple[str, ...]] = {
    1: ("qformer", "vision_lora", "soft_prompt"),
    2: ("qformer", "lm_lora", "soft_prompt"),
}


@dataclass
class LoraSpec:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: the part's default targets

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoraSpec":
        reject_unknown_keys(cls, d, "LoRA option(s)")
        spec = cls(**d)
        if spec.r < 1:
            raise ConfigError(f"LoRA rank r={spec.r} must be >= 1")
        return spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def add_lora(model: nn.Module, part: str, spec: LoraSpec, default_targets: list[str]) -> None:
    """Wrap ``model.<part>`` in a peft LoRA model (base weights frozen, adapters trainable)."""
    from peft import LoraConfig, get_peft_model

    if part not in ADAPTER_PARTS:
        raise ConfigError(f"LoRA part {part!r} is not one of {list(ADAPTER_PARTS)}")
    if has_lora(model, part):
        raise ConfigError(f"model.{part} already has LoRA adapters")
    targets = spec.target_modules or default_targets
    owner, attr = _place(model, part)
    sub = getattr(owner, attr)
    # GPT-2's Conv1D stores weights transposed; peft must be told (it warns and guesses otherwise).
    conv1d = any(type(m).__name__ == "Conv1D" for n, m in sub.named_modules() if n.rsplit(".", 1)[-1] in targets)
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=targets, bias="none", fan_in_fan_out=conv1d)
    try:
        wrapped = get_peft_model(sub, config)
    except ValueError as exc:  # peft: target modules not found
        raise ConfigError(f"LoRA on {part}: {exc}") from None
    setattr(owner, attr, wrapped)


def _place(model: nn.Module, part: str) -> tuple[nn.Module, str]:
    """The module holding ``part`` and its attribute name (``model.<part>`` unless the model says otherwise)."""
    return model.adapter_place(part) if hasattr(model, "adapter_place") else (model, part)


def _part(model: nn.Module, part: str) -> nn.Module:
    owner, attr = _place(model, part)
    return getattr(owner, attr)


def has_lora(model: nn.Module, part: str) -> bool:
    from peft import PeftModel

    return isinstance(_part(model, part), PeftModel)


def add_adapters(model: nn.Module, part: str, spec: dict[str, Any]) -> None:
    """Attach LoRA to ``part`` through the model's own ``_attach_lora`` (its default targets) and record
    it in the model's config, so a saved folder rebuilds the same structure (stage 1 -> stage 2)."""
    model._attach_lora(part, spec)
    for cfg in (getattr(model, "config", None), getattr(model, "crrg_config", None)):
        if isinstance(cfg, dict):
            cfg.setdefault("lora", {})[part] = dict(spec)


def merge_lora(model: nn.Module, part: str) -> None:
    """Fold ``model.<part>``'s adapters into its base weights and drop the peft wrapper."""
    if not has_lora(model, part):
        raise ConfigError(f"model.{part} has no LoRA adapters to merge")
    owner, attr = _place(model, part)
    setattr(owner, attr, getattr(owner, attr).merge_and_unload())


def save_adapter(model: nn.Module, part: str, out_dir: str | Path) -> Path:
    """Write ``model.<part>``'s adapter in peft format (atomically) under ``out_dir``."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    if not has_lora(model, part):
        raise ConfigError(f"model.{part} has no LoRA adapters to save")
    peft_model = _part(model, part)
    out = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    atomic_save_file(out / ADAPTER_WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    config = peft_model.peft_config["default"].to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    atomic_write_json(out / ADAPTER_CONFIG, config)
    return out


def load_adapter(model: nn.Module, part: str, adapter_dir: str | Path) -> None:
    """Attach the adapter saved by :func:`save_adapter` to ``model.<part>`` (adding LoRA if absent)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(adapter_dir)
    if not (folder / ADAPTER_WEIGHTS).is_file() or not (folder / ADAPTER_CONFIG).is_file():
        raise InputError(f"{folder} is not a LoRA adapter folder: it needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    saved = json.loads((folder / ADAPTER_CONFIG).read_text())
    if not has_lora(model, part):
        spec = LoraSpec(r=saved["r"], alpha=saved["lora_alpha"], dropout=saved.get("lora_dropout", 0.0),
                        target_modules=list(saved["target_modules"]))
        add_lora(model, part, spec, spec.target_modules or [])
    result = set_peft_model_state_dict(_part(model, part), load_file(str(folder / ADAPTER_WEIGHTS)))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise InputError(f"adapter {folder} does not fit model.{part}: unexpected keys {unexpected[:3]}")


def _group_of(name: str) -> str:
    if name.startswith("vision."):
        return "vision_lora" if "lora_" in name else "vision"
    if name.startswith("lm."):
        return "lm_lora" if "lora_" in name else "lm"
    if name.startswith("soft_prompt"):
        return "soft_prompt"
    return "qformer"


def set_trainable(model: nn.Module, groups: Iterable[str]) -> dict[str, int]:
    """Freeze everything except ``groups``; returns trainable parameter counts per group."""
    groups = set(groups)
    unknown = groups - set(TRAINABLE_GROUPS)
    if unknown:
        raise ConfigError(f"unknown trainable group(s) {sorted(unknown)}; known: {list(TRAINABLE_GROUPS)}")
    for part, group in (("vision", "vision_lora"), ("lm", "lm_lora")):
        if group in groups and not has_lora(model, part):
            raise ConfigError(f"stage trains {group} but model.{part} has no LoRA adapters (set lora.{part})")
    group_of = getattr(model, "parameter_group", _group_of)
    counts: dict[str, int] = {}
    for name, param in model.named_parameters():
        group = group_of(name)
        param.requires_grad_(group in groups)
        if param.requires_grad:
            counts[group] = counts.get(group, 0) + param.numel()
    return counts


def parameter_counts(model: nn.Module) -> dict[str, dict[str, int]]:
    """Total and trainable parameters per group (for the per-stage table)."""
    group_of = getattr(model, "parameter_group", _group_of)
    out: dict[str, dict[str, int]] = {}
    for name, param in model.named_parameters():
        row = out.setdefault(group_of(name), {"total": 0, "trainable": 0})
        row["total"] += param.numel()
        row["trainable"] += param.numel() if param.requires_grad else 0
    return out
