"""Per-step seeding: the random draws of a training step depend only on (seed, epoch, batch, rank).

Saving RNG states in checkpoints is not enough for bit-exact resume: between the checkpoint (written
after step k) and step k+1, an uninterrupted run may validate or start a data loader, which draws
from the global generators, while a resumed run does something else at that point. Reseeding Python,
NumPy and torch (CPU and CUDA) at the start of every training batch makes dropout, augmentation and
sampling inside a step a pure function of where in training it is, so a resumed run draws exactly
what an uninterrupted one would, on every rank.

Loading a sample is the other place random draws happen (augmentation, prompt variants), and it runs
*before* the step's reseeding, in the main process or in a loader worker whose generator has served
other samples first. :func:`seeded` makes those draws a function of (seed, epoch, sample index):
:class:`crrg.training.sampling.SeededDataset` wraps every training dataset in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from typing import Any, Iterator

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    """A 32-bit seed mixed from the four numbers (hashing keeps nearby steps uncorrelated)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{batch_idx}:{rank}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


@contextlib.contextmanager
def seeded(value: int) -> Iterator[None]:
    """Seed Python, NumPy and torch (CPU) with ``value`` inside the block; restore their states after,
    so code around the block (a training step, another sample) draws as if it had not run."""
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(value)
    np.random.seed(value)
    torch.default_generator.manual_seed(value)  # CPU only: sample loading draws no CUDA numbers
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


class StepSeed(Callback):
    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        value = step_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)  # also seeds every CUDA device
