"""Task registry: how a model plugs into the one training engine.

A *task* is what `crrg train TASK` trains. It knows its model and data; the engine knows everything
else (seeding, devices, DDP, checkpoints, resume, logs, the run folder). A task provides three
methods, all receiving the full resolved config dict (its own sections plus ``trainer:``):

``build_module(config) -> lightning.LightningModule``
    The model with ``training_step`` / ``validation_step`` / ``configure_optimizers``. Read the
    learning rate from ``config["trainer"]["lr"]``. Log the training loss as ``train_loss`` and the
    validation loss as ``val_loss`` so ``trainer.monitor: val_loss`` works across tasks.
``build_datamodule(config) -> lightning.LightningDataModule``
    Returns ordinary ``torch.utils.data.DataLoader`` objects built with ``batch_size``
    (``config["trainer"]["batch_size"]``), ``num_workers`` and a ``collate_fn``; no samplers needed.
    The engine replaces the sampler by a deterministic, sharded, resumable one
    (:mod:`crrg.training.sampling`) so DDP and resume-after-kill see exactly the batches an
    uninterrupted run sees. Training loaders are shuffled unless built with ``shuffle=False``.
    Data paths come from ``config["data"]`` (``crrg train --data M.jsonl`` sets ``data.manifest``).
``export(module, out_dir) -> None``
    Writes the trained model as a loadable artefact: safetensors + config JSON, normally
    ``crrg.models.registry.save_pretrained(module.model, out_dir)`` when the module wraps a registry
    model, so ``load_pretrained(out_dir)`` and ``crrg models info out_dir`` work on it.

Register with ``register_task("name", factory)`` where ``factory()`` returns such an object (a class
works as its own factory). Built-in task names map to modules imported on first use
(:data:`_TASK_MODULES`), so ``crrg --help`` does not import torch; a module registers its task at
import time::

    # crrg/clip/task.py
    from crrg.training.tasks import register_task

    class ClipTask:
        def build_module(self, config): ...
        def build_datamodule(self, config): ...
        def export(self, module, out_dir): ...

    register_task("clip", ClipTask)

Optionally a task may define ``stages`` (a tuple of names) to validate ``--stage``; the selected
stage is ``config["stage"]``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from crrg.errors import ConfigError


@runtime_checkable
class Task(Protocol):
    def build_module(self, config: dict) -> Any: ...

    def build_datamodule(self, config: dict) -> Any: ...

    def export(self, module: Any, out_dir: Path) -> None: ...


_TASKS: dict[str, Callable[[], Task]] = {}
# Modules that register a task when imported; imported lazily so `crrg --help` stays fast.
_TASK_MODULES = {
    "toy": "crrg.training.toy",
    "clip": "crrg.clip.task",
    "classifier": "crrg.clip.classifier_task",
    "rrg": "crrg.rrg.task",
    "blip": "crrg.blip.task",
    "report-lm": "crrg.blip.language_model",
}


def register_task(name: str, factory: Callable[[], Task]) -> Callable[[], Task]:
    """Make ``name`` trainable; ``factory()`` must return an object with the three task methods."""
    _TASKS[name] = factory
    return factory


def register_task_module(name: str, module: str) -> None:
    """Let a plug-in task be imported on first use (``module`` must call :func:`register_task`)."""
    _TASK_MODULES[name] = module


def list_tasks() -> list[str]:
    return sorted(set(_TASKS) | set(_TASK_MODULES))


def get_task(name: str) -> Task:
    """Instantiate the task registered as ``name``, importing its module on first use."""
    if name not in _TASKS and name in _TASK_MODULES:
        module = _TASK_MODULES[name]
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module.startswith(exc.name):
                raise ConfigError(f"task {name!r} is not available in this installation ({module} is missing)") from None
            raise
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(list_tasks())}")
    task = _TASKS[name]()
    missing = [m for m in ("build_module", "build_datamodule", "export") if not callable(getattr(task, m, None))]
    if missing:
        raise TypeError(f"task {name!r} lacks {missing}; see crrg.training.tasks for the contract")
    return task
