"""Linear probes on a frozen image tower: features computed once, one logistic head per label.

Why this path exists next to ``crrg train classifier``: with an ImageNet tower on a CPU, training
heads on cached features takes seconds, so settings (regularisation, which data, which realism
levers) can be chosen by cross-validation instead of guessed, and the result is the same
``classifier`` family as every other classifier (``probabilities(images)``, ``labels``,
``thresholds``), saved with ``save_pretrained``.

Two domains meet here (synthetic and real films), and a tower's features differ between them in
mean and scale even for the same anatomy. ``Standardiser`` records a domain's feature statistics
(from unlabelled images: no labels needed), so a head trained on standardised synthetic features can
be applied to standardised real features; :func:`build_probe_classifier` folds the target domain's
statistics into the linear head, so the saved model needs no extra step at inference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from crrg.clip.data import image_to_tensor, load_image
from crrg.errors import InputError

log = logging.getLogger(__name__)


@torch.no_grad()
def extract_features(tower: torch.nn.Module, paths: Sequence[str], image_size: int, batch_size: int = 32,
                     augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None, seed: int = 0,
                     progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Pooled tower features, one row per image; ``augment(image, rng)`` runs before resizing, with an rng
    seeded by ``(seed, index)`` so a run is reproducible whatever the batch size."""
    tower.eval()
    rows = []
    for start in range(0, len(paths), batch_size):
        batch = []
        for index in range(start, min(start + batch_size, len(paths))):
            image = load_image(paths[index])
            if augment is not None:
                image = augment(image, np.random.default_rng([seed, index]))
            batch.append(image_to_tensor(image, image_size))
        rows.append(tower(torch.stack(batch)).float().numpy())
        if progress is not None:
            progress(len(batch))
    if not rows:
        return np.zeros((0, getattr(tower, "feature_dim", 0)), np.float32)
    return np.concatenate(rows).astype(np.float32)


@dataclass
class Standardiser:
    """Per-feature mean and standard deviation of one image domain."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> "Standardiser":
        if len(features) < 2:
            raise InputError("feature statistics need at least two images")
        return cls(features.mean(0), features.std(0) + 1e-6)

    @classmethod
    def identity(cls, dim: int) -> "Standardiser":
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) / self.std


@dataclass
class LinearHeads:
    """One logistic regression per label on (standardised) features: ``sigmoid(X @ weight.T + bias)``."""

    weight: np.ndarray  # (labels, features)
    bias: np.ndarray  # (labels,)

    def scores(self, features: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(features @ self.weight.T + self.bias)))


def fit_heads(features: np.ndarray, targets: np.ndarray, mask: np.ndarray, c: float,
              sample_weight: np.ndarray | None = None, balanced: bool = True) -> LinearHeads:
    """Per label, an L2 logistic regression on the rows whose label is known (``mask > 0``).

    A label with one class only among its known rows gets a constant head at that class's log-odds
    (so it cannot rank, and says so by scoring everything alike).
    """
    from sklearn.linear_model import LogisticRegression

    n_labels = targets.shape[1]
    weight = np.zeros((n_labels, features.shape[1]), np.float32)
    bias = np.zeros(n_labels, np.float32)
    for j in range(n_labels):
        rows = mask[:, j] > 0
        y = targets[rows, j] > 0.5
        if y.all() or not y.any():
            p = float(np.clip(y.mean() if len(y) else 0.5, 1e-3, 1 - 1e-3))
            bias[j] = np.log(p / (1 - p))
            continue
        lr = LogisticRegression(C=c, max_iter=2000, class_weight="balanced" if balanced else None)
        lr.fit(features[rows], y, sample_weight=None if sample_weight is None else sample_weight[rows])
        weight[j] = lr.coef_[0]
        bias[j] = lr.intercept_[0]
    return LinearHeads(weight, bias)


def out_of_fold_scores(features: np.ndarray, targets: np.ndarray, mask: np.ndarray, c: float, folds: np.ndarray,
                       extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, weight: float = 1.0,
                       extra_weight: np.ndarray | None = None) -> np.ndarray:
    """Scores of each row from heads fitted without its fold (``folds``: a fold number per row).

    ``extra`` (features, targets, mask) joins every fold's training data and is never scored: e.g.
    the synthetic set, when the folds are over the real labelled images. ``weight`` is each row's
    sample weight, ``extra_weight`` the extra rows' (default 1).
    """
    scores = np.zeros(targets.shape, np.float32)
    for k in np.unique(folds):
        train = folds != k
        x, y, m = features[train], targets[train], mask[train]
        w = np.full(int(train.sum()), weight, np.float32)
        if extra is not None:
            x, y, m = np.concatenate([x, extra[0]]), np.concatenate([y, extra[1]]), np.concatenate([m, extra[2]])
            w = np.concatenate([w, extra_weight if extra_weight is not None else np.ones(len(extra[0]), np.float32)])
        scores[folds == k] = fit_heads(x, y, m, c, sample_weight=w).scores(features[folds == k])
    return scores


def group_folds(groups: Sequence[Any], n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """A fold number per row, rows of one group (patient) always in the same fold."""
    unique = sorted(set(groups), key=str)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[i]: rank % n_folds for rank, i in enumerate(order)}
    return np.array([fold_of[g] for g in groups])


def build_probe_classifier(encoder_config: dict[str, Any], tower_state: dict[str, torch.Tensor], labels: Sequence[str],
                           heads: LinearHeads, standardiser: Standardiser, thresholds: dict[str, float],
                           extra_config: dict[str, Any] | None = None):
    """A ``classifier``-family model: the frozen tower plus the heads with ``standardiser`` folded in.

    ``sigmoid(w . (f - mean) / std + b) = sigmoid((w / std) . f + b - w . (mean / std))``. The saved
    config has ``weights: null``: the tower's weights are in the classifier's own file, so loading it
    needs neither the weights package nor the hub.
    """
    from crrg.models.registry import build_model

    config = {"family": "classifier", "image_encoder": {**encoder_config, "weights": None}, "labels": list(labels),
              "dropout": 0.0, "mode": "linear_probe", **(extra_config or {})}
    model = build_model(config)
    model.image_encoder.load_state_dict(tower_state)
    weight = heads.weight / standardiser.std[None, :]
    bias = heads.bias - (heads.weight * (standardiser.mean / standardiser.std)[None, :]).sum(1)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        model.head.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
    model.thresholds = {n: float(thresholds.get(n, 0.5)) for n in labels}
    return model.eval()
