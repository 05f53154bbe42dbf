"""Supervised classifier on the CLIP image tower (family ``classifier``).

A linear probe (frozen tower, trained head) or a full fine-tune, for users who have labels. The
decision thresholds are chosen on validation data after training and stored with the model as
``thresholds.json``, so ``crrg classify`` gives the same labels the evaluation reported.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from crrg.clip.data import images_to_batch
from crrg.clip.image_encoders import build_image_encoder
from crrg.io import atomic_write_json
from crrg.models.registry import register_family
from crrg.observations import CHEXPERT_14

log = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"
DEFAULT_THRESHOLD = 0.5


class ImageClassifier(nn.Module):
    def __init__(self, config: dict[str, Any]):
        super().__init__()
        from crrg.models.schema import ClassifierConfig, parse

        cfg = parse(ClassifierConfig, config, "classifier")  # defaults and checks: crrg.models.schema
        self.labels: list[str] = list(cfg.labels or CHEXPERT_14)
        self.image_size = int(cfg.image_encoder.get("image_size", 224))
        self.image_encoder = build_image_encoder(cfg.image_encoder)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(self.image_encoder.feature_dim, len(self.labels))
        self.thresholds: dict[str, float] = {n: DEFAULT_THRESHOLD for n in self.labels}

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits, one column per label."""
        return self.head(self.dropout(self.image_encoder(images)))

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return images_to_batch(images, self.image_size).to(self.device)

    @torch.no_grad()
    def probabilities(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        self.eval()
        out = [torch.sigmoid(self(self.preprocess(images[i:i + batch_size]))).cpu() for i in range(0, len(images), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def load_image_tower(self, clip_model: nn.Module) -> None:
        """Start from a trained CLIP model's image tower (shapes must agree)."""
        self.image_encoder.load_state_dict(clip_model.image_encoder.state_dict())

    def on_saved(self, folder: Path, dtype=None) -> None:
        atomic_write_json(Path(folder) / THRESHOLDS_FILE, self.thresholds)

    def on_loaded(self, folder: Path) -> None:
        path = Path(folder) / THRESHOLDS_FILE
        if path.is_file():
            stored = json.loads(path.read_text())
            self.thresholds = {n: float(stored.get(n, DEFAULT_THRESHOLD)) for n in self.labels}


@register_family("classifier")
def build_classifier(config: dict[str, Any]) -> ImageClassifier:
    return ImageClassifier(config)


def choose_thresholds(y_true: np.ndarray, y_score: np.ndarray, labels: Sequence[str], mask: np.ndarray | None = None) -> dict[str, float]:
    """Per label, the threshold maximising F1 on validation data (0.5 where a label has one class only).

    F1 rather than Youden's J: positives are rare for most findings, and F1 is what the evaluation
    reports next to AUC. Entries with ``mask == 0`` (unknown labels) are left out.
    """
    from crrg.evaluation.classification import choose_thresholds as choose

    truth = np.asarray(y_true, dtype=np.float64)
    if mask is not None:
        truth = np.where(np.asarray(mask) > 0, truth, np.nan)
    return choose(truth, y_score, list(labels), method="f1")
