"""The OOD assessment of one film by a model that carries feature statistics (:mod:`crrg.ood.stats`).

Every report of a model whose folder holds ``ood.safetensors`` carries ``GeneratedReport.ood``
(:meth:`OODAssessment.to_dict`) and, above the threshold, a warning in ``GeneratedReport.warnings``
that the report is unreliable. What the score means: ``docs/ood.md``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from crrg.ood.stats import FeatureStats

log = logging.getLogger(__name__)
UNRELIABLE_WARNING = ("This film is unlike the films the model was trained on (OOD score {score:.2f} > "
                      "threshold {threshold:.2f}): the report and the finding probabilities are unreliable.")


@dataclass
class OODAssessment:
    score: float  # squared PPCA Mahalanobis distance / feature dimension; about 1 on training-like films
    threshold: float  # the percentile of held-out training-distribution scores in ``percentile``
    unreliable: bool  # score > threshold
    percentile: float  # which percentile the threshold is
    # P(the film is a real radiograph, not one like the synthetic training films) from the model's domain
    # discriminant (crrg.ood.domain); None when the model has none
    real_probability: float | None = None
    real_threshold: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.real_probability is None:  # a model without a discriminant reports what it always did
            del out["real_probability"], out["real_threshold"]
        return out

    @property
    def reads_as_real(self) -> bool:
        """Whether the real-film classifier (where the model has one) should decide this film's findings:
        the discriminant's verdict, or without one, the OOD flag."""
        if self.real_probability is None:
            return self.unreliable
        return self.real_probability > self.real_threshold

    @property
    def warning(self) -> str | None:
        return UNRELIABLE_WARNING.format(score=self.score, threshold=self.threshold) if self.unreliable else None


def classifier_of(model) -> Any:
    """The module whose image tower the statistics describe: an rrg model's context encoder or attached
    finding classifier (this and older layouts), or a classifier itself."""
    for candidate in (getattr(model, "context_encoder", None), getattr(model, "finding_classifier", None),
                      getattr(getattr(model, "finding_source", None), "classifier", None), model):
        if candidate is not None and hasattr(candidate, "image_encoder") and hasattr(candidate, "preprocess"):
            return candidate
    return None


@torch.no_grad()
def tower_features(classifier, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """(n, d) pooled features of the classifier's image tower, preprocessed as the classifier does."""
    classifier.eval()
    out = [classifier.image_encoder(classifier.preprocess(list(images[i:i + batch_size]))).float().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, classifier.image_encoder.feature_dim), np.float32)


class OODScorer:
    """Statistics plus the tower they describe: ``assess(image)`` for one film."""

    def __init__(self, stats: FeatureStats, classifier):
        self.stats = stats
        self.classifier = classifier

    @classmethod
    def for_model(cls, model, folder: str | Path) -> "OODScorer | None":
        """The scorer of a loaded model from its folder's statistics; None without statistics or tower."""
        stats = FeatureStats.load(folder)
        if stats is None:
            return None
        classifier = classifier_of(model)
        if classifier is None:
            log.warning("%s has OOD statistics but the model has no image tower to score with", folder)
            return None
        return cls(stats, classifier)

    def assess(self, image: np.ndarray) -> OODAssessment:
        features = tower_features(self.classifier, [image])
        score = float(self.stats.score(features)[0])
        domain = self.stats.domain
        return OODAssessment(round(score, 4), round(self.stats.threshold, 4), score > self.stats.threshold,
                             float(self.stats.meta.get("percentile", 99.0)),
                             None if domain is None else round(float(domain.probability(features)[0]), 4),
                             0.5 if domain is None else domain.threshold)
