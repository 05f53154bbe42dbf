"""Which films a model's real-film classifier should read: a synthetic-vs-real discriminant.

A model trained on synthetic films that also carries a real-film classifier (``classifier_real/``)
must pick, per film, which of the two decides the findings. Picking by the OOD score (a film above its
99th-percentile threshold is "real") sends the tail of real films that happen to score low to the
synthetic classifier: 95 of 800 NIH films for crrg-default 0.9.0. The two classifiers' probabilities
are on different scales, so a set of films read by a mix of them is ranked by which classifier read
each film, not by the finding: on NIH ``valid/`` that mix turned Lung Lesion's AUC from .75 (one
classifier for all) into .08. The OOD score's tails do overlap (synthetic val up to 5.7, NIH from 3.7):
it answers "is this film like the training films?", not "is this film real?".

This module answers the second question with a logistic regression on the same pooled tower features,
fitted on the model's own synthetic training films against **unlabelled** real films (no finding label
is read). It is stored beside the OOD statistics in ``ood.safetensors`` and only chooses the finding
source; the OOD score and its warning are unchanged. ``python -m crrg.ood domain`` fits it
(``docs/ood.md``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

# a film is read by the real-film classifier when P(real) is above this: both kinds of error cost the
# same (one classifier's scale where the other's belongs), and the fit is class-balanced
REAL_THRESHOLD = 0.5
TENSORS = ("domain_mean", "domain_scale", "domain_weight")


@dataclass
class DomainDiscriminant:
    """P(real film) = sigmoid(((features - mean) / scale) . weight + bias)."""

    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)
    weight: np.ndarray  # (d,)
    bias: float
    threshold: float = REAL_THRESHOLD
    meta: dict = field(default_factory=dict)  # C, counts, cross-validated accuracy, the data it saw

    @classmethod
    def fit(cls, synthetic: np.ndarray, real: np.ndarray, c: float = 0.1, folds: int = 5,
            meta: dict | None = None) -> "DomainDiscriminant":
        """Class-balanced L2 logistic regression (scikit-learn) on standardised features; ``meta`` gets the
        ``folds``-fold cross-validated balanced accuracy, so a fit that cannot tell the domains apart
        says so."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import cross_val_score

        synthetic, real = np.asarray(synthetic, np.float64), np.asarray(real, np.float64)
        if len(synthetic) < folds or len(real) < folds:
            raise ValueError(f"need at least {folds} synthetic and {folds} real films to fit the domain "
                             f"discriminant, got {len(synthetic)} and {len(real)}")
        x = np.concatenate([synthetic, real])
        y = np.r_[np.zeros(len(synthetic)), np.ones(len(real))]
        mean, scale = x.mean(0), x.std(0) + 1e-6
        z = (x - mean) / scale
        make = lambda: LogisticRegression(C=c, class_weight="balanced", max_iter=5000)  # noqa: E731
        cv = cross_val_score(make(), z, y, cv=folds, scoring="balanced_accuracy")
        model = make().fit(z, y)
        return cls(mean.astype(np.float32), scale.astype(np.float32), model.coef_[0].astype(np.float32),
                   float(model.intercept_[0]),
                   meta=dict(meta or {}, C=c, n_synthetic=len(synthetic), n_real=len(real),
                             cv_balanced_accuracy=round(float(cv.mean()), 4)))

    def probability(self, features: np.ndarray) -> np.ndarray:
        """P(real) per row of (n, d) tower features."""
        z = (np.atleast_2d(np.asarray(features, np.float64)) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(z @ self.weight.astype(np.float64) + self.bias)))

    # ----- storage inside ood.safetensors (crrg.ood.stats) -----
    def tensors(self) -> dict[str, np.ndarray]:
        return dict(zip(TENSORS, (self.mean, self.scale, self.weight)))

    def metadata(self) -> str:
        return json.dumps({"bias": self.bias, "threshold": self.threshold, "meta": self.meta}, sort_keys=True)

    @classmethod
    def from_stored(cls, arrays: dict[str, np.ndarray], metadata: str) -> "DomainDiscriminant":
        info = json.loads(metadata)
        return cls(*(np.asarray(arrays[k], np.float32) for k in TENSORS), float(info["bias"]),
                   float(info.get("threshold", REAL_THRESHOLD)), info.get("meta", {}))
