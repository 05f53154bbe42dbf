"""Fixed-width region features: the detector's RoI features projected and tagged with their region.

The box-head output (1024 wide for torchvision's TwoMLPHead) is too wide for a small GPT-2 and
does not say *which* region it came from; a sentence about the "left costophrenic angle" needs both
what the region looks like and where it is, so a learned region embedding is added.
"""

from __future__ import annotations

import torch
from torch import nn

from crrg.rrg.detector import NUM_REGIONS


class RegionFeatureProjector(nn.Module):
    def __init__(self, in_features: int, width: int, dropout: float = 0.1):
        super().__init__()
        self.width = width
        self.proj = nn.Sequential(nn.LayerNorm(in_features), nn.Linear(in_features, width), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(width, width))
        self.region_embedding = nn.Embedding(NUM_REGIONS, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, roi_features: torch.Tensor) -> torch.Tensor:
        """(B, NUM_REGIONS, in_features) box-head features -> (B, NUM_REGIONS, width)."""
        if roi_features.shape[-2] != NUM_REGIONS:
            raise ValueError(f"expected {NUM_REGIONS} regions, got {roi_features.shape[-2]}")
        ids = torch.arange(NUM_REGIONS, device=roi_features.device)
        return self.norm(self.proj(roi_features) + self.region_embedding(ids))
