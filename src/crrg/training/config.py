"""Training configs: one YAML file, dotted ``--set`` overrides, and a checked ``trainer:`` section.

A config is a plain nested dict so every task can keep its own sections (``model:``, ``data:``,
``loss:`` ...) without the engine knowing them. Only the ``trainer:`` section belongs to the engine;
it is validated here into a :class:`TrainerConfig` so a typo (``max_step: 10``) fails before any
model is built instead of being silently ignored.

Overrides are ``dotted.key=value`` strings; the value is parsed as YAML, so ``trainer.lr=1e-4`` is a
float, ``trainer.max_epochs=null`` is ``None`` and ``model.layers=[64,64]`` a list.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, get_type_hints

import yaml

from crrg.errors import ConfigError

TRAINER_SECTION = "trainer"
SCHEDULES = ("warmup_cosine", "constant", "plateau")
PRECISION_AUTO = "auto"


@dataclass
class TrainerConfig:
    """The engine's settings; tasks read ``batch_size``, ``lr`` and ``num_workers`` from here too."""

    seed: int = 0
    max_steps: int | None = None
    max_epochs: int | None = None
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    accumulate_grad_batches: int = 1
    # Lightning's precision ("32-true", "bf16-mixed", "16-mixed" ...), or "auto": bf16-mixed on a GPU
    # that has bf16, 16-mixed on an older GPU, 32-true on the CPU (crrg.training.engine).
    precision: str = "32-true"
    gradient_clip: float | None = None
    checkpoint_every_n_steps: int = 100
    keep_checkpoints: int = 2
    log_every_n_steps: int = 10
    val_check_interval: float | int | None = None
    limit_val_batches: float | int | None = None
    num_workers: int = 0
    # Data loading that keeps a GPU busy (applied by the engine to every task's loaders,
    # crrg.training.sampling): pin_memory null = pinned when training on CUDA; persistent_workers
    # keeps loader workers alive across epochs and validations (with num_workers > 0);
    # prefetch_factor = batches each worker loads ahead (null: PyTorch's 2).
    pin_memory: bool | None = None
    persistent_workers: bool = True
    prefetch_factor: int | None = None
    deterministic: bool | str = "warn"
    accelerator: str = "auto"
    strategy: str | None = None
    monitor: str | None = None
    monitor_mode: str = "min"
    # The learning-rate schedule every task uses (crrg.training.optim): linear warmup over
    # warmup_fraction of the optimizer steps (at least one), then a cosine from lr down to
    # min_lr_ratio * lr; "constant" keeps lr throughout.
    # "plateau" is RGRG's: ReduceLROnPlateau stepped once per validation with plateau_monitor
    # (default: monitor), multiplying the LR by plateau_factor after plateau_patience validations
    # without a relative improvement of plateau_threshold, then waiting plateau_cooldown validations.
    schedule: str = "warmup_cosine"
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.0
    plateau_monitor: str | None = None
    plateau_mode: str | None = None
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    plateau_threshold: float = 1e-3
    plateau_cooldown: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_steps is None and self.max_epochs is None:
            raise ConfigError("trainer: set max_steps or max_epochs (both are missing)")
        for name in ("batch_size", "accumulate_grad_batches", "checkpoint_every_n_steps", "keep_checkpoints", "log_every_n_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"trainer.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "max_epochs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"trainer.{name} must be at least 1 (or null), got {value}")
        if self.num_workers < 0:
            raise ConfigError(f"trainer.num_workers must be >= 0, got {self.num_workers}")
        if self.lr <= 0:
            raise ConfigError(f"trainer.lr must be positive, got {self.lr}")
        if self.monitor_mode not in ("min", "max"):
            raise ConfigError(f"trainer.monitor_mode must be 'min' or 'max', got {self.monitor_mode!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"trainer.schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"trainer.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"trainer.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        self._check_plateau()
        if self.prefetch_factor is not None and self.prefetch_factor < 1:
            raise ConfigError(f"trainer.prefetch_factor must be at least 1 (or null), got {self.prefetch_factor}")
        if isinstance(self.deterministic, str) and self.deterministic != "warn":
            raise ConfigError(f"trainer.deterministic must be true, false or 'warn', got {self.deterministic!r}")

    def _check_plateau(self) -> None:
        if self.plateau_mode not in (None, "min", "max"):
            raise ConfigError(f"trainer.plateau_mode must be 'min' or 'max' (or null: monitor_mode), got {self.plateau_mode!r}")
        if not 0.0 < self.plateau_factor < 1.0:
            raise ConfigError(f"trainer.plateau_factor must be in (0, 1), got {self.plateau_factor}")
        for name in ("plateau_patience", "plateau_cooldown"):
            if getattr(self, name) < 0:
                raise ConfigError(f"trainer.{name} must be >= 0, got {getattr(self, name)}")
        if self.plateau_threshold < 0:
            raise ConfigError(f"trainer.plateau_threshold must be >= 0, got {self.plateau_threshold}")
        if self.schedule == "plateau" and self.plateau_metric is None:
            raise ConfigError("trainer.schedule 'plateau' needs a validation metric: set trainer.plateau_monitor "
                              "(or trainer.monitor), e.g. val_loss")

    @property
    def plateau_metric(self) -> str | None:
        """The metric the plateau schedule watches: plateau_monitor, else monitor."""
        return self.plateau_monitor or self.monitor

    @property
    def plateau_direction(self) -> str:
        return self.plateau_mode or self.monitor_mode

    @classmethod
    def from_config(cls, config: dict) -> "TrainerConfig":
        """Validate ``config['trainer']``: unknown keys and wrong types are a :class:`ConfigError`."""
        section = config.get(TRAINER_SECTION) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"config section 'trainer' must be a mapping, got {type(section).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"unknown trainer setting(s) {unknown}; known: {sorted(known)}")
        hints = get_type_hints(cls)
        values = {}
        for key, value in section.items():
            values[key] = _check_type(f"trainer.{key}", value, hints[key])
        return cls(**values)


def _check_type(name: str, value: Any, hint: Any) -> Any:
    """Accept ``value`` if it fits ``hint`` (a simple union of int/float/str/bool/None/dict)."""
    allowed = getattr(hint, "__args__", None) or (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{name} must not be null")
    if isinstance(value, bool):
        if bool in allowed:
            return value
        raise ConfigError(f"{name} must be {_describe(allowed)}, got {value!r}")
    if int in allowed and isinstance(value, int):
        return value
    if float in allowed and isinstance(value, (int, float)):
        return float(value) if int not in allowed else value
    if str in allowed and isinstance(value, str):
        return value
    if float in allowed and isinstance(value, str):
        try:  # YAML 1.1 reads `1e-4` (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if dict in allowed and isinstance(value, dict):
        return value
    raise ConfigError(f"{name} must be {_describe(allowed)}, got {value!r}")


def _describe(types: Iterable[type]) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def config_section(config: dict, name: str) -> dict:
    """A task's section of a config (``model``, ``data`` ...): a mapping, empty when absent."""
    value = config.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"config section {name!r} must be a mapping")
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"trainer.lr=1e-4"`` -> (["trainer", "lr"], 1e-4)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} is not of the form dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc.__class__.__name__})") from None
    return key.split("."), value


def apply_overrides(config: dict, overrides: Iterable[str] | None) -> dict:
    """Return a copy of ``config`` with each ``dotted.key=value`` set (creating sections as needed)."""
    out = copy.deepcopy(config)
    for text in overrides or ():
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(parts[: i + 1])} is {child!r}, not a section")
            node = child
        node[parts[-1]] = value
    return out


def set_in(config: dict, dotted: str, value: Any) -> dict:
    """Set one dotted key to an already-typed value (used for --data, --stage)."""
    parts = dotted.split(".")
    out = copy.deepcopy(config)
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a section")
    node[parts[-1]] = value
    return out


def load_config(path: str | os.PathLike | None, overrides: Iterable[str] | None = None) -> dict:
    """Read a YAML (or JSON) config, apply overrides, validate and complete the trainer section.

    ``path=None`` starts from an empty config (everything from overrides and defaults).
    """
    config: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or exc.__class__.__name__
            raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(loaded).__name__}")
        config = loaded
    # Validating here fails early, before any model is built; the trainer section comes back
    # typed and complete, so tasks can read any trainer setting without defaults of their own.
    return resolved_config(apply_overrides(config, overrides))


def resolved_config(config: dict) -> dict:
    """The config with every trainer default filled in: what config.json in the run folder records."""
    out = copy.deepcopy(config)
    out[TRAINER_SECTION] = dataclasses.asdict(TrainerConfig.from_config(config))
    return out
