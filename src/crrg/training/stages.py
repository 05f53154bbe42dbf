"""Multi-stage recipes: the one place where a recipe's per-stage settings are applied.

A task with stages (``rrg``: detector, classifiers, pretrain, language, joint) declares them as
``stages`` and names the config key a stage starts from (``stage_init_key``, e.g. ``model.init``).
A recipe lists the stages it runs under ``stages:``, each with the settings that differ from the
base config (any section: ``trainer``, ``loss``, ``model``, ``data`` ...)::

    trainer: {lr: 1.0e-3, ...}
    stages:
      detector:    {trainer: {max_epochs: 3, batch_size: 8}}
      classifiers: {trainer: {max_epochs: 30, batch_size: 64}}

:func:`stage_config` merges ``stages.<stage>`` into the base config (deeply, the per-stage value
wins) for a single stage; :func:`run_stages` runs the stages in the task's order, each in
``out/<stage>`` through the engine and each starting from the previous stage's exported model. On
resume, a stage whose model is exported is skipped and an interrupted one continues from its last
checkpoint. ``crrg train TASK --config X`` runs the recipe's stages (or ``--stages a,b``) this way;
``--stage S`` runs one of them with its settings.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from crrg.errors import ConfigError

log = logging.getLogger(__name__)
STAGES_SECTION = "stages"


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` with ``update`` merged in: nested mappings merge, anything else is replaced (the
    registry's merge of model overrides, shared on purpose: one meaning of "override")."""
    from crrg.models.registry import _merge

    return _merge(base, copy.deepcopy(update))


def recipe_stages(config: dict) -> dict[str, dict]:
    """The ``stages:`` section (stage name -> its settings), checked to be mappings."""
    section = config.get(STAGES_SECTION) or {}
    if not isinstance(section, dict):
        raise ConfigError("config section 'stages' must map stage names to their settings")
    for name, settings in section.items():
        if settings is not None and not isinstance(settings, dict):
            raise ConfigError(f"stages.{name} must be a mapping of settings (e.g. {{trainer: {{max_epochs: 3}}}})")
    return {str(name): settings or {} for name, settings in section.items()}


def select_stages(task_stages: Sequence[str], config: dict, requested: Iterable[str] | None = None) -> list[str]:
    """The stages to run, in the task's order: ``requested`` if given, else those the recipe lists."""
    listed = recipe_stages(config)
    unknown = [s for s in listed if s not in task_stages]
    if unknown:
        raise ConfigError(f"stages {unknown} in the recipe are not stages of this task ({', '.join(task_stages)})")
    wanted = list(requested) if requested is not None else list(listed)
    bad = [s for s in wanted if s not in task_stages]
    if bad:
        raise ConfigError(f"unknown stage(s) {bad}; this task's stages: {', '.join(task_stages)}")
    if not wanted:
        raise ConfigError(f"the recipe lists no stages: add a 'stages:' section or pass --stages ({', '.join(task_stages)})")
    return [s for s in task_stages if s in wanted]


def set_dotted(config: dict, dotted: str, value: Any) -> None:
    node = config
    for part in dotted.split(".")[:-1]:
        node = node.setdefault(part, {})
    node[dotted.split(".")[-1]] = value


def stage_config(config: dict, stage: str, init: str | os.PathLike | None = None, init_key: str = "model.init") -> dict:
    """The config of one stage: the base config + ``stages.<stage>``, started from ``init`` if given."""
    cfg = deep_merge(config, recipe_stages(config).get(stage, {}))
    cfg.pop(STAGES_SECTION, None)
    cfg["stage"] = stage
    if init is not None:
        set_dotted(cfg, init_key, str(init))
    return cfg


def run_stages(task_name: str, config: dict, out_dir: str | os.PathLike, stages: Sequence[str], *, resume: bool = False,
               devices: int = 1, num_nodes: int = 1, progress_bar: bool = True, extra_callbacks: Iterable[Any] = ()) -> Path:
    """Train ``stages`` of ``task_name`` in order into ``out_dir/<stage>``; return the last exported model."""
    from crrg.training import engine
    from crrg.training.tasks import get_task

    task = get_task(task_name)
    init_key = getattr(task, "stage_init_key", "model.init")
    prepare = getattr(task, "prepare_stages", None)
    if prepare is not None:
        config = prepare(config, Path(out_dir))
    out = Path(out_dir)
    init: Path | None = None
    for stage in stages:
        stage_dir = out / stage
        done = stage_dir / engine.MODEL_DIR
        if resume and (done / "config.json").is_file():
            log.info("%s: stage %s already done (%s)", task_name, stage, done)
            init = done
            continue
        cfg = stage_config(config, stage, init, init_key)
        init = Path(engine.train(task_name, cfg, stage_dir, devices=devices, num_nodes=num_nodes, resume=resume and stage_dir.exists(),
                                 progress_bar=progress_bar, extra_callbacks=extra_callbacks))
    if init is None:
        raise ConfigError("no stage to run")
    return init
