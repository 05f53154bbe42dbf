"""What every dataset reader shares: the reader protocol, path handling and small parsers.

A reader is an iterable of :class:`~crrg.records.StudyRecord` with a known length, so the CLI can
show a progress bar and stream records straight into the manifest without holding them all.
After iteration, ``reader.notes`` holds counts worth telling the user (missing reports, split ids
that matched nothing, ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Protocol

from crrg.errors import InputError
from crrg.observations import normalise_view

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validate": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
    "unassigned": "unassigned", "": "unassigned",
}


class RecordReader(Protocol):
    notes: dict[str, int]

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator["StudyRecord"]: ...  # noqa: F821


def normalise_split(value: object, where: str) -> str:
    """Map split spellings (MIMIC's 'validate', 'valid', ...) to crrg's train / val / test / unassigned."""
    key = "" if value is None else str(value).strip().lower()
    if key == "nan":
        key = ""
    if key not in SPLIT_ALIASES:
        raise InputError(f"{where}: split {value!r} is not one of train / val / validate / test")
    return SPLIT_ALIASES[key]


def view_of(value: object) -> str:
    """A view position as one of crrg's VIEWS; also accepts spellings like 'LARGE LATERAL', 'XTABLE LATERAL'."""
    if value is None or (isinstance(value, float) and value != value):
        return "unknown"
    view = normalise_view(str(value))
    if view == "unknown":
        text = str(value).upper()
        if "LATERAL" in text:
            return "LL" if text.startswith("L") and "LEFT" in text else "LATERAL"
    return view


def require_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    return path


def relative_to_manifest(path: str | os.PathLike, manifest_dir: Path | None) -> str:
    """Store image paths relative to the manifest's folder, so manifest and images move together."""
    if manifest_dir is None:
        return str(path)
    return os.path.relpath(os.path.abspath(path), os.path.abspath(manifest_dir))
