"""The one optimizer and learning-rate schedule of every training task.

AdamW over the given parameter groups, with the schedule of the ``trainer:`` section
(:class:`crrg.training.config.TrainerConfig`): a linear warmup over ``warmup_fraction`` of the
optimizer steps (at least one step), then a half cosine from ``lr`` down to ``min_lr_ratio * lr``,
stepped once per optimizer step. One place, so a recipe means the same schedule for CLIP, the
classifier, every rrg stage, ClinicalBLIP and the report LM, and a change of it is a config change.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from crrg.training.config import TrainerConfig


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """The learning-rate factor at optimizer step ``step`` (0-based) of ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(total: int, fraction: float) -> int:
    return max(1, int(fraction * total))


def total_steps(module: Any, default: int = 1000) -> int:
    """The optimizer steps of the whole run, as Lightning estimates them (``default`` outside a trainer)."""
    trainer = getattr(module, "_trainer", None)
    return max(1, int(trainer.estimated_stepping_batches)) if trainer is not None else default


def configure_adamw(module: Any, params: Iterable[Any], config: dict) -> dict[str, Any]:
    """``configure_optimizers``' answer: AdamW on ``params`` (tensors or parameter groups) with the
    trainer section's lr, weight decay and schedule."""
    cfg = TrainerConfig.from_config(config)
    optimizer = torch.optim.AdamW(list(params), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "constant":
        return {"optimizer": optimizer}
    total = total_steps(module)
    warmup = warmup_steps(total, cfg.warmup_fraction)
    min_ratio = cfg.min_lr_ratio

    def factor(step: int) -> float:  # a plain function: LambdaLR's state_dict then stores no object
        return warmup_cosine(step, warmup, total, min_ratio)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
