"""One prediction path for both kinds of classifier: zero-shot CLIP and the supervised head.

``crrg classify``, ``crrg evaluate-classifier`` and the benchmark all go through
:func:`load_classifier`, so a CLIP run folder and a classifier run folder are interchangeable
wherever a classifier is expected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from crrg.clip.data import load_image
from crrg.errors import ConfigError, InputError


@dataclass
class LoadedClassifier:
    kind: str  # "zero-shot" or "supervised"
    names: list[str]
    thresholds: dict[str, float]
    _predict: Callable[[Sequence[np.ndarray]], np.ndarray]

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self._predict(images)

    def labels(self, probabilities: np.ndarray) -> np.ndarray:
        t = np.array([self.thresholds[n] for n in self.names])
        return (probabilities >= t).astype(int)


def load_classifier(model_path: str | os.PathLike, prompts: str | os.PathLike | None = None,
                    device: str = "cpu") -> LoadedClassifier:
    """A saved ``clip`` (zero-shot, with ``prompts``) or ``classifier`` model, ready to predict on
    ``device`` (cpu, cuda, cuda:N or auto, :func:`crrg.generation.resolve_device`)."""
    from crrg.generation.device import resolve_device
    from crrg.models.registry import load_pretrained

    model = load_pretrained(model_path, map_location=resolve_device(device))
    family = getattr(model, "crrg_config", {}).get("family")
    if family == "clip":
        from crrg.clip.zeroshot import ZeroShotClassifier

        zs = ZeroShotClassifier.from_prompt_file(model, prompts)
        return LoadedClassifier("zero-shot", zs.observations, zs.thresholds(), zs.probabilities)
    if family == "classifier":
        if prompts is not None:
            raise InputError("--prompts only applies to CLIP (zero-shot) models; this is a supervised classifier")
        return LoadedClassifier("supervised", list(model.labels), dict(model.thresholds), model.probabilities)
    raise ConfigError(f"{model_path} is a {family!r} model; classification needs a 'clip' or 'classifier' model")


def check_images(paths: Sequence[str | os.PathLike]) -> None:
    """Fail before loading any model when an input file is missing (the usual typo)."""
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"image {path} does not exist")


def predict_paths(classifier: LoadedClassifier, paths: Sequence[str], batch_size: int = 32, progress=None) -> np.ndarray:
    batches = range(0, len(paths), batch_size)
    out = []
    for start in (progress(batches, total=len(batches), description="classifying") if progress else batches):
        out.append(classifier.probabilities([load_image(p) for p in paths[start:start + batch_size]]))
    return np.concatenate(out) if out else np.zeros((0, len(classifier.names)))
