"""How far a film lies from the model's own training films: feature statistics, distance, threshold.

The model's image tower (the attached classifier's, whose features every finding decision and every
region's context come from) maps a film to one pooled feature vector. On the model's training films
these vectors fill a small part of feature space; a film unlike them (a real radiograph for a model
trained on synthetic ones, a photograph, a CT slice) lands elsewhere, and there the model's outputs
mean nothing. The statistics are those of a probabilistic PCA of the training features (Tipping and
Bishop): the mean, the top ``k`` principal directions with their variances, and one variance for the
rest. A film's **OOD score** is its squared Mahalanobis distance under that model divided by the
feature dimension: about 1 for a typical training film, growing with unlikeness. It is stored with the
**threshold** (a percentile, 99 by default, of the scores of held-out films of the training
distribution, so that about 1 in 100 such films is flagged) in the model folder's ``ood.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crrg.errors import ConfigError
from crrg.ood.domain import DomainDiscriminant

OOD_FILE = "ood.safetensors"
FORMAT = "crrg-ood-ppca-1"


@dataclass
class FeatureStats:
    """PPCA statistics of training features and the score threshold chosen on held-out data."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (d, k), orthonormal columns
    variances: np.ndarray  # (k,), variance along each component
    residual_variance: float  # variance per dimension of what the k components leave
    threshold: float = float("inf")
    meta: dict = field(default_factory=dict)  # n_fit, n_val, percentile, tower, data: provenance
    # which films the real-film classifier reads (crrg.ood.domain); None: the unreliable ones
    domain: DomainDiscriminant | None = None

    @classmethod
    def fit(cls, features: np.ndarray, k: int = 32, meta: dict | None = None) -> "FeatureStats":
        """PPCA by SVD of the centred features; ``k`` is capped below the number of films."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or len(x) < 3:
            raise ValueError(f"need a (n >= 3, d) feature matrix to fit OOD statistics, got {x.shape}")
        n, d = x.shape
        k = max(1, min(k, n - 2, d - 1))
        mean = x.mean(0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        eig = s ** 2 / (n - 1)
        residual = float(eig[k:].sum() / max(d - k, 1))
        floor = 1e-6 * float(eig[0]) if eig[0] > 0 else 1e-12
        return cls(mean.astype(np.float32), vt[:k].T.astype(np.float32),
                   np.maximum(eig[:k], floor).astype(np.float32), max(residual, floor),
                   meta=dict(meta or {}, n_fit=n, k=k))

    @classmethod
    def choose_k(cls, features: np.ndarray, candidates: tuple[int, ...] = (8, 16, 32, 64, 96, 128, 192, 256),
                 held_out: float = 0.2, seed: int = 0) -> tuple[int, dict[int, float]]:
        """The number of principal directions with the highest held-out log-likelihood: fit on
        ``1 - held_out`` of the films, score the rest (the PPCA model selection of Tipping and Bishop,
        on films of the training distribution only), and each candidate's mean held-out log-likelihood."""
        x = np.asarray(features, dtype=np.float64)
        order = np.random.default_rng(seed).permutation(len(x))
        cut = int(round(len(x) * (1 - held_out)))
        fit, rest = x[order[:cut]], x[order[cut:]]
        scores = {k: float(cls.fit(fit, k).log_likelihood(rest).mean()) for k in candidates if k < min(cut - 2, x.shape[1])}
        if not scores:
            raise ValueError(f"too few films ({len(x)}) to choose the number of principal directions")
        return max(scores, key=scores.get), scores

    def log_likelihood(self, features: np.ndarray) -> np.ndarray:
        """Gaussian log-density of each row under the PPCA model."""
        d = self.mean.shape[0]
        logdet = float(np.log(self.variances.astype(np.float64)).sum()) + (d - len(self.variances)) * np.log(self.residual_variance)
        return -0.5 * (logdet + self.score(features) * d + d * np.log(2 * np.pi))

    def score(self, features: np.ndarray) -> np.ndarray:
        """OOD score per row: squared PPCA Mahalanobis distance / feature dimension (about 1 in distribution)."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float64)) - self.mean
        z = x @ self.components
        residual = (x ** 2).sum(1) - (z ** 2).sum(1)
        d2 = (z ** 2 / self.variances).sum(1) + np.maximum(residual, 0.0) / self.residual_variance
        return d2 / x.shape[1]

    def calibrate(self, val_features: np.ndarray, percentile: float = 99.0) -> float:
        """Set the threshold to the ``percentile`` of held-out in-distribution films' scores."""
        scores = self.score(val_features)
        self.threshold = float(np.percentile(scores, percentile))
        self.meta.update(n_val=len(scores), percentile=percentile,
                         val_median=float(np.median(scores)))
        return self.threshold

    def save(self, folder: str | Path) -> Path:
        import torch
        from safetensors.torch import save_file

        from crrg.io import atomic_save_file

        path = Path(folder) / OOD_FILE
        arrays = {"mean": self.mean, "components": self.components, "variances": self.variances,
                  **(self.domain.tensors() if self.domain is not None else {})}
        tensors = {name: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for name, value in arrays.items()}
        metadata = {"format": FORMAT, "residual_variance": repr(self.residual_variance),
                    "threshold": repr(self.threshold), "meta": json.dumps(self.meta, sort_keys=True)}
        if self.domain is not None:
            metadata["domain"] = self.domain.metadata()
        atomic_save_file(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "FeatureStats | None":
        """The statistics in ``folder``'s ``ood.safetensors``, or None when the folder has none."""
        from safetensors import safe_open

        path = Path(folder) / OOD_FILE
        if not path.is_file():
            return None
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise ConfigError(f"{path} is not a crrg OOD statistics file ({FORMAT}); refit it with "
                                  "`python -m crrg.ood fit`")
            arrays = {k: f.get_tensor(k) for k in f.keys()}
        domain = DomainDiscriminant.from_stored(arrays, metadata["domain"]) if "domain" in metadata else None
        return cls(arrays["mean"], arrays["components"], arrays["variances"],
                   float(metadata["residual_variance"]), float(metadata["threshold"]),
                   json.loads(metadata.get("meta", "{}")), domain)
