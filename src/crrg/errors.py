"""User-facing errors.

Anything a user can cause (a missing file, a corrupt image, a malformed manifest line) is raised as a
:class:`CrrgError` with a message that names the problem and, where possible, what to do next. The CLI
prints such errors as one line and exits non-zero; the HTTP service turns them into 4xx answers.
Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CrrgError(Exception):
    """Base class of errors caused by the user's input or environment, not by a bug in crrg."""


class InputError(CrrgError):
    """A file or value the user gave is missing, unreadable or of the wrong kind."""


class ImageError(InputError):
    """An image file cannot be decoded into a radiograph (corrupt, truncated, not an image, too large)."""


class ManifestError(InputError):
    """A manifest (JSONL of study records) is malformed; the message names the file and line."""


class ConfigError(CrrgError):
    """A configuration file or model name is invalid or unknown."""


def reject_unknown_keys(config_class, given, what: str) -> None:
    """Raise :class:`ConfigError` when ``given`` has keys that are not fields of the dataclass
    ``config_class``; ``what`` names them in the message (e.g. "LoRA option(s)")."""
    known = set(config_class.__dataclass_fields__)
    unknown = set(given) - known
    if unknown:
        raise ConfigError(f"unknown {what} {sorted(unknown)}; known: {sorted(known)}")
