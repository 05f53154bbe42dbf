"""Checkpoints that survive a kill, and the state a resumed run needs beyond Lightning's own.

- :class:`AtomicCheckpointIO` writes every ``.ckpt`` to a temporary sibling and renames it over the
  target (``crrg.io.atomic_save_file``); a SIGKILL during a save leaves the previous file intact.
  The engine also keeps the newest ``keep_checkpoints`` step files next to ``last.ckpt``.
- :func:`find_resume_checkpoint` picks ``last.ckpt``, or the newest readable step file if
  ``last.ckpt`` is missing or damaged.
- :class:`RngState` stores every rank's Python / NumPy / torch RNG states in the checkpoint and
  puts them back just before the first resumed batch, so dropout and augmentation draw the same
  numbers as in a run that was never stopped.
"""

from __future__ import annotations

import logging
import os
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from crrg.io import atomic_save_file

log = logging.getLogger(__name__)

LAST = "last.ckpt"
STEP_FILE_RE = re.compile(r"step(\d+)\.ckpt$")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but never leaves a half-written file under the final name."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_save_file(path, lambda tmp: torch.save(checkpoint, tmp))


def step_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the step files in ``folder``, newest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_FILE_RE.search(p.name))]
    return sorted(found, reverse=True)


def is_readable_checkpoint(path: Path) -> bool:
    """A cheap completeness test: torch checkpoints are zip archives, and a cut-off zip has no directory."""
    return path.is_file() and path.stat().st_size > 0 and zipfile.is_zipfile(path)


def find_resume_checkpoint(folder: Path) -> Path | None:
    """The checkpoint to resume from: last.ckpt, else the newest step file that is complete."""
    candidates = [folder / LAST] + [p for _, p in step_checkpoints(folder)]
    for path in candidates:
        if is_readable_checkpoint(path):
            return path
        if path.exists():
            log.warning("skipping damaged checkpoint %s", path)
    return None


def has_checkpoints(folder: Path) -> bool:
    return (folder / LAST).exists() or bool(step_checkpoints(folder))


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RngState(Callback):
    """Save all ranks' RNG states with each checkpoint; restore them before the first resumed batch."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        states = _rng_states()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, states)  # every rank saves in step, so this is safe
            return {"ranks": gathered}
        return {"ranks": [states]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict.get("ranks") or []
        rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
        if rank < len(ranks):
            self._pending = ranks[rank]
        elif ranks:
            log.warning("checkpoint holds RNG states of %d ranks, this is rank %d: random draws will differ", len(ranks), rank)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._pending is not None:
            _set_rng_states(self._pending)
            self._pending = None
