"""Fine-tune the whole pretrained tower of a finding classifier (the step after a frozen-tower probe).

A linear probe keeps ImageNet's filters, which were never asked to tell a blunted costophrenic angle
from a sharp one. Fine-tuning every layer on synthetic films made to look real (``crrg.image.realism``,
resolution matched to the real set), optionally with real labelled films beside them, lets the tower
learn radiograph features while the realism levers keep it from leaning on what only DRRs have.

Two steps use unlabelled real films and nothing else: the epoch (and whether to adapt) is chosen on a
selection set of real films whose labels are held out from training, and *AdaBN* re-estimates every
BatchNorm layer's statistics on unlabelled real films, so the saved tower normalises real images
with real statistics (Li et al., 2016). The result is an ordinary ``classifier`` model (tower plus
linear head), saved with ``save_pretrained`` and loaded like any other.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from crrg.clip.data import image_to_tensor
from crrg.errors import ConfigError, reject_unknown_keys
from crrg.training.optim import warmup_cosine_scheduler

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    """How the tower is fine-tuned; every choice that is not fixed here is made on the selection set."""

    epochs: int = 8
    batch_size: int = 32
    lr: float = 3e-4  # AdamW, the tower; the fresh head gets ``head_lr_scale`` times this
    head_lr_scale: float = 10.0
    weight_decay: float = 1e-4
    real_weight: float = 1.0  # loss weight of a real labelled film relative to a synthetic one
    match_size: int = 64  # synthetic films go down to this side and back up (the real NIH films are 64 px); 0 = off
    adabn: bool = True  # also try BatchNorm statistics from unlabelled real films (kept if selection agrees)
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FinetuneConfig":
        reject_unknown_keys(cls, d, "finetune key(s)")
        cfg = cls(**d)
        if cfg.epochs < 1 or cfg.batch_size < 2 or cfg.lr <= 0:
            raise ConfigError("finetune needs epochs >= 1, batch_size >= 2 and lr > 0")
        return cfg


@dataclass
class TrainSet:
    """Decoded films with targets and masks; ``augment(image, rng)`` runs on each draw (None: none)."""

    images: list[np.ndarray]
    targets: np.ndarray
    mask: np.ndarray
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
    weight: float = 1.0
    match_size: int = 0


@dataclass
class FinetuneResult:
    model: nn.Module
    epoch: int
    adabn: bool
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _tensor(image: np.ndarray, size: int, match_size: int) -> torch.Tensor:
    if match_size and max(image.shape) > match_size:
        from crrg.clip.data import PIXEL_MEAN, PIXEL_STD

        image = image_to_tensor(image, match_size)[0].numpy() * PIXEL_STD + PIXEL_MEAN
    return image_to_tensor(image, size)


@torch.no_grad()
def tower_scores(model: nn.Module, images: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """Sigmoid scores of ``model`` (eval mode) on decoded films, as the saved model's ``probabilities``."""
    return model.probabilities(list(images), batch_size=batch_size)


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, images: Sequence[np.ndarray], batch_size: int = 64) -> nn.Module:
    """AdaBN: every BatchNorm layer's running statistics re-estimated (cumulative average) on ``images``.

    No label is read; the returned model is a copy in eval mode."""
    adapted = copy.deepcopy(model)
    norms = [m for m in adapted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    adapted.train()
    for start in range(0, len(images), batch_size):
        adapted.image_encoder(adapted.preprocess(images[start:start + batch_size]))
    for m in norms:
        m.momentum = 0.1
    return adapted.eval()


def finetune(model: nn.Module, train_sets: Sequence[TrainSet], cfg: FinetuneConfig,
             select: Callable[[nn.Module], float], unlabelled_real: Sequence[np.ndarray] = ()) -> FinetuneResult:
    """Train ``model`` (a ``classifier``) on ``train_sets`` with masked BCE; keep the epoch whose model
    ``select`` scores highest (with and without AdaBN on ``unlabelled_real`` when ``cfg.adabn``)."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    size = model.image_size
    head = list(model.head.parameters())
    head_ids = {id(p) for p in head}
    tower = [p for p in model.parameters() if id(p) not in head_ids]
    opt = torch.optim.AdamW([{"params": tower, "lr": cfg.lr}, {"params": head, "lr": cfg.lr * cfg.head_lr_scale}],
                            weight_decay=cfg.weight_decay)
    index = [(s, i) for s, ts in enumerate(train_sets) for i in range(len(ts.images))]
    steps = cfg.epochs * ((len(index) + cfg.batch_size - 1) // cfg.batch_size)
    sched = warmup_cosine_scheduler(opt, steps, warmup_fraction=0.15)  # the project's one schedule (was one-cycle)
    best: tuple[float, int, bool, dict] | None = None
    history = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(len(index))
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            batch = [index[k] for k in order[start:start + cfg.batch_size]]
            if len(batch) < 2:
                continue
            xs, ys, ms, ws = [], [], [], []
            for s, i in batch:
                ts = train_sets[s]
                image = ts.images[i]
                if ts.augment is not None:
                    image = ts.augment(image, rng)
                xs.append(_tensor(image, size, ts.match_size))
                ys.append(ts.targets[i])
                ms.append(ts.mask[i] * ts.weight)
            x = torch.stack(xs)
            y = torch.from_numpy(np.asarray(ys, np.float32))
            m = torch.from_numpy(np.asarray(ms, np.float32))
            loss = nn.functional.binary_cross_entropy_with_logits(model(x), y, weight=m, reduction="sum") / m.sum().clamp(min=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(batch)
        model.eval()
        candidates = [(False, model)]
        if cfg.adabn and len(unlabelled_real):
            candidates.append((True, adapt_batchnorm(model, unlabelled_real)))
        row = {"epoch": epoch, "loss": total / len(index)}
        for adabn, candidate in candidates:
            score = float(select(candidate))
            row["select adabn" if adabn else "select"] = score
            if best is None or score > best[0]:
                best = (score, epoch, adabn, copy.deepcopy(candidate.state_dict()))
        history.append(row)
        log.info("finetune epoch %d: %s (%.0f s)", epoch, {k: round(v, 4) for k, v in row.items()}, time.perf_counter() - t0)
    assert best is not None
    model.load_state_dict(best[3])
    return FinetuneResult(model.eval(), best[1], best[2], history, time.perf_counter() - t0)
