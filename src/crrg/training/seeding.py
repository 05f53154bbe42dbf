"""Per-step seeding: the random draws of a training step depend only on (seed, epoch, batch, rank).

Saving RNG states in checkpoints is not enough for bit-exact resume: between the checkpoint (written
after step k) and step k+1, an uninterrupted run may validate or start a data loader, which draws
from the global generators, while a resumed run does something else at that point. Reseeding Python,
NumPy and torch (CPU and CUDA) at the start of every training batch makes dropout, augmentation and
sampling inside a step a pure function of where in training it is, so a resumed run draws exactly
what an uninterrupted one would, on every rank.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    """A 32-bit seed mixed from the four numbers (hashing keeps nearby steps uncorrelated)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{batch_idx}:{rank}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class StepSeed(Callback):
    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        value = step_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)  # also seeds every CUDA device
