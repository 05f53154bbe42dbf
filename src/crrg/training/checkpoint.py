"""Checkpoints that survive a kill, and the state a resumed run needs beyond Lightning's own.

- :class:`AtomicCheckpointIO` writes every ``.ckpt`` to a temporary sibling and renames it over the
  target (``crrg.io.atomic_save_file``); a SIGKILL during a save leaves the previous file intact.
  The engine also keeps the newest ``keep_checkpoints`` step files next to ``last.ckpt``.
- :func:`find_resume_checkpoint` picks ``last.ckpt``, or the newest readable step file if
  ``last.ckpt`` is missing or damaged.
- Random draws are made resumable by :class:`crrg.training.seeding.StepSeed`, not by storing
  RNG states: what runs between a checkpoint and the next step (validation, loader start-up)
  differs between a resumed and an uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

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
