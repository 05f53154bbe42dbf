"""Zero-shot classification with a CLIP model (CheXzero style).

For each observation the model compares the image with a positive prompt ("pleural effusion") and
a negative one ("no pleural effusion"); the probability is the softmax of the two similarities.
Comparing two prompts instead of taking a softmax over all labels lets several findings be present
at once. Each side may have several prompts; their embeddings are averaged (a prompt ensemble),
which makes results less sensitive to one phrasing.

Prompts live in an editable JSON file (the packaged ``prompts.json`` by default)::

    {"observations": {"Cardiomegaly": {"positive": ["cardiomegaly", ...], "negative": ["no cardiomegaly", ...]}}}
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from crrg.errors import ConfigError, InputError

if TYPE_CHECKING:
    from crrg.clip.model import CLIPModel

DEFAULT_THRESHOLD = 0.5
Prompts = dict[str, dict[str, list[str]]]


def default_prompt_file() -> Path:
    return Path(str(resources.files("crrg.clip") / "prompts.json"))


def load_prompts(path: str | os.PathLike | None = None) -> Prompts:
    """Read and check a prompt file: every observation needs non-empty positive and negative lists."""
    path = Path(path) if path is not None else default_prompt_file()
    if not path.is_file():
        raise InputError(f"prompt file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"prompt file {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    observations = data.get("observations") if isinstance(data, dict) else None
    if not isinstance(observations, dict) or not observations:
        raise ConfigError(f"prompt file {path} needs an 'observations' object mapping names to prompts")
    prompts: Prompts = {}
    for name, sides in observations.items():
        if not isinstance(sides, dict):
            raise ConfigError(f"prompt file {path}: {name!r} must map to {{'positive': [...], 'negative': [...]}}")
        entry = {}
        for side in ("positive", "negative"):
            texts = sides.get(side)
            if isinstance(texts, str):
                texts = [texts]
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise ConfigError(f"prompt file {path}: {name!r} needs a non-empty list of {side} prompts")
            entry[side] = texts
        prompts[name] = entry
    return prompts


class ZeroShotClassifier:
    """A CLIP model plus one positive and one negative (ensembled) text embedding per observation."""

    def __init__(self, model: "CLIPModel", prompts: Prompts):
        self.model = model
        self.observations = list(prompts)
        with torch.no_grad():
            self.positive = torch.stack([self._ensemble(prompts[n]["positive"]) for n in self.observations])
            self.negative = torch.stack([self._ensemble(prompts[n]["negative"]) for n in self.observations])

    @classmethod
    def from_prompt_file(cls, model: "CLIPModel", path: str | os.PathLike | None = None) -> "ZeroShotClassifier":
        return cls(model, load_prompts(path))

    def _ensemble(self, texts: Sequence[str]) -> torch.Tensor:
        return F.normalize(self.model.embed_texts(list(texts)).mean(0), dim=-1)

    @torch.no_grad()
    def probabilities_from_embeddings(self, image_emb: torch.Tensor) -> np.ndarray:
        scale = self.model.scale()
        pos = scale * image_emb @ self.positive.t()
        neg = scale * image_emb @ self.negative.t()
        return torch.sigmoid(pos - neg).cpu().numpy()  # = softmax over (pos, neg), taking pos

    def probabilities(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """(N, observations) probabilities for decoded images."""
        self.model.eval()
        return self.probabilities_from_embeddings(self.model.embed_images(images, batch_size=batch_size))

    def thresholds(self) -> dict[str, float]:
        """Thresholds stored with the model (chosen on validation data), else 0.5."""
        stored = self.model.thresholds or {}
        return {n: float(stored.get(n, DEFAULT_THRESHOLD)) for n in self.observations}
