"""The CLIP image-report model (family ``clip``): two towers, two projections, one temperature.

Trained with the symmetric InfoNCE loss on unlabeled radiograph-report pairs. The temperature is
learned as ``logit_scale = log(1 / T)`` and clamped (as in CLIP) so it cannot run away and make the
loss numerically useless.

A saved CLIP folder may carry extras next to the weights: the tokenizer (always), a retrieval
index of training reports (``retrieval/``, which makes the model a report generator, see
:mod:`crrg.clip.retrieval`), and zero-shot thresholds chosen on validation data
(``thresholds.json``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crrg.clip.data import SECTIONS, images_to_batch
from crrg.clip.image_encoders import build_image_encoder
from crrg.clip.text_encoders import build_text_encoder
from crrg.errors import ConfigError
from crrg.io import atomic_write_json
from crrg.models.registry import CONFIG_FILE, register_family

log = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"


def projection_head(in_dim: int, out_dim: int, kind: str) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))
    raise ConfigError(f"projection {kind!r} is not 'linear' or 'mlp'")


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matched, L2-normalised embeddings (pair i is row i)."""
    logits = logit_scale * image_emb @ text_emb.t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class CLIPModel(nn.Module):
    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config
        self.image_size = int(config["image_encoder"].get("image_size", 224))
        self.section = config.get("report_section", "both")
        if self.section not in SECTIONS:
            raise ConfigError(f"report_section {self.section!r} is not one of {list(SECTIONS)}")
        embed_dim = int(config.get("embed_dim", 256))
        projection = config.get("projection", "linear")
        self.image_encoder = build_image_encoder(config["image_encoder"])
        self.text_encoder = build_text_encoder(config["text_encoder"])
        self.image_projection = projection_head(self.image_encoder.feature_dim, embed_dim, projection)
        self.text_projection = projection_head(self.text_encoder.feature_dim, embed_dim, projection)
        init_t = float(config.get("init_temperature", 0.07))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_t)))
        self.max_logit_scale = math.log(float(config.get("max_logit_scale", 100.0)))
        self.thresholds: dict[str, float] | None = None
        self.retrieval = None  # crrg.clip.retrieval.RetrievalIndex, when one is attached

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(0.0, self.max_logit_scale).exp()

    def clamp_logit_scale_(self) -> None:
        """Keep the stored parameter in range too (call after each optimiser step)."""
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, self.max_logit_scale)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_projection(self.image_encoder(images)), dim=-1)

    def encode_text_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projection(self.text_encoder(input_ids, attention_mask)), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.text_encoder.tokenize(list(texts), device=self.device)
        return self.encode_text_tokens(**tokens)

    def forward(self, images: torch.Tensor | None, texts: Sequence[str], text_features: torch.Tensor | None = None,
                image_features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``text_features`` / ``image_features``: a tower's pooled output when the caller already has it
        (a locked tower, see :class:`crrg.clip.task.LockedTextFeatures` and ``LockedImageFeatures``);
        only the projection then runs, and ``images`` may be None."""
        if image_features is None:
            image_emb = self.encode_image(images)
        else:
            image_emb = F.normalize(self.image_projection(image_features), dim=-1)
        if text_features is None:
            text_emb = self.encode_text(texts)
        else:
            text_emb = F.normalize(self.text_projection(text_features), dim=-1)
        loss = contrastive_loss(image_emb, text_emb, self.scale())
        return {"loss": loss, "image_emb": image_emb, "text_emb": text_emb}

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Decoded radiographs (see :func:`crrg.image.load_image`) as a batch on this model's device."""
        return images_to_batch(images, self.image_size).to(self.device)

    @torch.no_grad()
    def embed_images(self, images: Sequence[np.ndarray], batch_size: int = 32) -> torch.Tensor:
        out = [self.encode_image(self.preprocess(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.image_projection_dim())

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        out = [self.encode_text(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.image_projection_dim())

    def image_projection_dim(self) -> int:
        return int(self.config.get("embed_dim", 256))

    # --- report generation by retrieval (crrg.reporting protocol) ---
    def generate_report(self, study, **options):
        from crrg.clip.retrieval import generate_report

        return generate_report(self, study, **options)

    # --- extra files ---
    def on_saved(self, folder: Path, dtype=None) -> None:
        """Make the folder self-contained: tokenizer, a text-encoder config that needs no checkpoint, extras."""
        folder = Path(folder)
        self.text_encoder.save_tokenizer(folder)
        config = dict(getattr(self, "crrg_config", self.config))
        config["text_encoder"] = self.text_encoder.portable_config()
        self.crrg_config = config
        atomic_write_json(folder / CONFIG_FILE, config)
        if self.thresholds is not None:
            atomic_write_json(folder / THRESHOLDS_FILE, self.thresholds)
        if self.retrieval is not None:
            self.retrieval.save(folder)

    def on_loaded(self, folder: Path) -> None:
        from crrg.clip.retrieval import RetrievalIndex

        folder = Path(folder)
        self.text_encoder.load_saved_tokenizer(folder)
        if (folder / THRESHOLDS_FILE).is_file():
            self.thresholds = {k: float(v) for k, v in json.loads((folder / THRESHOLDS_FILE).read_text()).items()}
        self.retrieval = RetrievalIndex.load(folder)


@register_family("clip")
def build_clip(config: dict[str, Any]) -> CLIPModel:
    for key in ("image_encoder", "text_encoder"):
        if not isinstance(config.get(key), dict):
            raise ConfigError(f"clip config needs an '{key}' object")
    return CLIPModel(config)
