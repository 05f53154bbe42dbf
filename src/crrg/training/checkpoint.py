"""Checkpoints that survive a kill, verify before they load, and never run code.

- :class:`AtomicCheckpointIO` writes every ``.ckpt`` to a temporary sibling and renames it over the
  target (``crrg.io.atomic_save_file``); a SIGKILL during a save leaves the previous file intact.
  Beside each checkpoint it writes ``<name>.sha256`` (the digest of the bytes written, in
  ``sha256sum`` format, itself written atomically and *before* the checkpoint is renamed into place),
  so a file damaged later (flipped bytes inside an intact zip load silently otherwise) is refused.
- Checkpoints are read with ``torch.load(weights_only=True)``: tensors, numbers, strings and plain
  containers only. A planted ``last.ckpt`` whose pickle would import and call something is refused
  with a :class:`CheckpointError` before anything in it runs; :data:`SAFE_GLOBALS` is the allow-list
  of the few non-builtin types a crrg checkpoint legitimately holds.
- :func:`find_resume_checkpoint` picks ``last.ckpt``, else the newest step file that verifies; it
  warns about each one it skips, and raises when checkpoints exist but none verifies (a resume must
  never silently start again from step 0).
- Random draws are made resumable by :class:`crrg.training.seeding.StepSeed` and
  :class:`crrg.training.sampling.SeededDataset`, not by storing RNG states: what runs between a
  checkpoint and the next step (validation, loader start-up) differs between a resumed and an
  uninterrupted run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from crrg.errors import ConfigError
from crrg.io import atomic_save_file, atomic_write_text

log = logging.getLogger(__name__)

LAST = "last.ckpt"
CHECKSUM_SUFFIX = ".sha256"
STEP_FILE_RE = re.compile(r"step(\d+)\.ckpt$")
# Non-builtin types that may appear in a crrg/Lightning checkpoint (everything else is refused).
SAFE_GLOBALS: list[Any] = []


class CheckpointError(ConfigError):
    """A checkpoint is damaged, unverifiable or holds something other than plain state."""


def checksum_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksum(path: str | os.PathLike, written: str | os.PathLike | None = None) -> None:
    """Record the sha256 of ``written`` (default ``path``) in ``path.sha256``."""
    atomic_write_text(checksum_path(path), f"{file_sha256(written or path)}  {Path(path).name}\n")


def verify_checksum(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``path`` exists and matches its ``.sha256`` record."""
    path = Path(path)
    record = checksum_path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not record.is_file():
        raise CheckpointError(f"checkpoint {path} has no {record.name} beside it, so it cannot be verified "
                              "(crrg writes one with every checkpoint); refusing to load it")
    expected = record.read_text(encoding="utf-8", errors="replace").split()[:1]
    if not expected or expected[0] != file_sha256(path):
        raise CheckpointError(f"checkpoint {path} does not match its checksum ({record.name}): the file is damaged")


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Verify ``path`` and load it without unpickling code (``weights_only=True``)."""
    verify_checksum(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
        raise CheckpointError(f"checkpoint {path} holds objects other than plain state and was not loaded "
                              f"(it may have been tampered with): {detail.strip()[:200]}") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {str(exc).splitlines()[0][:200]}") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO: atomic writes with a sha256 record, verified weights-only reads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")

        def write(tmp: str) -> None:
            torch.save(checkpoint, tmp)
            write_checksum(path, tmp)  # before the rename: a new file never appears without its record

        atomic_save_file(path, write)

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        # ``weights_only`` is ignored on purpose: nothing in a training checkpoint needs full unpickling.
        return load_checkpoint_file(path, map_location=map_location if map_location is not None else "cpu")

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        super().remove_checkpoint(path)
        checksum_path(path).unlink(missing_ok=True)


def step_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the step files in ``folder``, newest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_FILE_RE.search(p.name))]
    return sorted(found, reverse=True)


def find_resume_checkpoint(folder: Path) -> Path | None:
    """The checkpoint to resume from: last.ckpt, else the newest step file that verifies.

    None when the folder holds no checkpoint at all; :class:`CheckpointError` when it holds some but
    none verifies.
    """
    candidates = [p for p in [folder / LAST] + [p for _, p in step_checkpoints(folder)] if p.exists()]
    problems = []
    for path in candidates:
        try:
            verify_checksum(path)
            return path
        except CheckpointError as exc:
            log.warning("skipping checkpoint: %s", exc)
            problems.append(path.name)
    if problems:
        raise CheckpointError(f"no usable checkpoint in {folder}: {', '.join(problems)} failed verification; "
                              "remove the folder or train into a new --out")
    return None


def has_checkpoints(folder: Path) -> bool:
    return (folder / LAST).exists() or bool(step_checkpoints(folder))
