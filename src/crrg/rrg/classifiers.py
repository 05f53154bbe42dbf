"""Heads on the region features: which regions get a sentence, which are abnormal, which findings.

* Region selection (RGRG's "region selection"): not every region is mentioned in a report; a region
  gets a sentence when the classifier says so, so reports stay as short as real ones.
* Region abnormality: drives the IMPRESSION and the joint design (an abnormal region should produce
  an abnormal sentence).
* Study findings (CheXpert-14): the generator's own finding probabilities, from all 29 regions at
  once, so ``crrg report`` can print them even without a separate CLIP classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from crrg.observations import CHEXPERT_14
from crrg.rrg.detector import NUM_REGIONS


def _mlp(width: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out))


class RegionBinaryClassifier(nn.Module):
    """One logit per region from that region's feature (shared weights; the feature carries the region id)."""

    def __init__(self, width: int, hidden: int = 128, dropout: float = 0.1):
        super().__init__()
        self.mlp = _mlp(width, hidden, 1, dropout)

    def forward(self, region_features: torch.Tensor) -> torch.Tensor:
        """(B, NUM_REGIONS, width) -> (B, NUM_REGIONS) logits."""
        return self.mlp(region_features).squeeze(-1)


class StudyFindingClassifier(nn.Module):
    """CheXpert-14 logits from the concatenated region features (where a finding is matters)."""

    def __init__(self, width: int, hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(1), nn.LayerNorm(NUM_REGIONS * width),
                                 _mlp(NUM_REGIONS * width, hidden, len(CHEXPERT_14), dropout))

    def forward(self, region_features: torch.Tensor) -> torch.Tensor:
        return self.net(region_features)


def label_targets(labels: dict[str, int | None]) -> tuple[list[float], list[float]]:
    """CheXpert labels -> (targets, weights) for BCE: uncertain counts as positive, unmentioned as negative.

    "U-ones" is the usual convention and matches the micro-5 clinical metric (uncertain = positive).
    """
    targets, weights = [], []
    for name in CHEXPERT_14:
        value = labels.get(name)
        targets.append(1.0 if value in (1, -1) else 0.0)
        weights.append(1.0)
    return targets, weights
