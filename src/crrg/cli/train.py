"""``crrg train TASK``: train any registered task with the one engine (see crrg.training.engine).

A recipe with a ``stages:`` section (``configs/rrg/*.yaml``) runs those stages in order, each in
``OUT/<stage>`` and each started from the previous one's model, with its per-stage settings
(:mod:`crrg.training.stages`); ``--stages a,b`` picks some of them, ``--stage S`` runs one into OUT.
``--validate-only`` checks the config of every stage that would run and trains nothing.
``--devices``/``--num-nodes``/``--accelerator``/``--precision`` say where it trains (docs/training.md):
``--devices N`` alone starts N processes on this machine; under torchrun or srun each launched process
is one rank and the flags must match the launcher's process counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from crrg.cli.common import CliState, info, is_quiet


def _quiet(ctx: typer.Context) -> bool:
    # Read --quiet from the root context typer hands us (common.is_quiet looks it up through
    # click's context stack, which typer >= 0.29 no longer uses).
    obj = ctx.find_root().obj
    return obj.quiet if isinstance(obj, CliState) else is_quiet()


def plan(task: str, cfg: dict, stage: str | None, stages: str | None) -> tuple[list[str] | None, dict]:
    """What a ``crrg train`` call runs: ``(None, config)`` for one run (a single stage's settings
    applied), or ``(stage names, recipe)`` for a multi-stage run. Raises ConfigError for bad stages."""
    from crrg.errors import ConfigError
    from crrg.training.config import resolved_config
    from crrg.training.stages import STAGES_SECTION, recipe_stages, select_stages, stage_config
    from crrg.training.tasks import get_task

    task_obj = get_task(task)
    task_stages = tuple(getattr(task_obj, "stages", None) or ())
    if stage is not None and stages is not None:
        raise ConfigError("pass either --stage (one stage into --out) or --stages (several, each in --out/<stage>)")
    if not task_stages:
        if stage is not None or stages is not None or cfg.get(STAGES_SECTION):
            raise ConfigError(f"task {task!r} has no stages; remove --stage/--stages and the 'stages:' section")
        return None, cfg
    if stage is not None:
        if stage not in task_stages:
            raise ConfigError(f"task {task!r} has no stage {stage!r}; its stages: {', '.join(task_stages)}")
        return None, resolved_config(stage_config(cfg, stage, init_key=getattr(task_obj, "stage_init_key", "model.init")))
    if stages is not None or recipe_stages(cfg):
        requested = [s.strip() for s in stages.split(",") if s.strip()] if stages is not None else None
        return select_stages(task_stages, cfg, requested), cfg
    return None, cfg  # a task with stages, configured for one (``stage:`` in the file, or its default)


def validate(task: str, cfg: dict, names: list[str] | None) -> int:
    """Check every stage config that would run (trainer section + the task's own checks); return how many."""
    from crrg.training.config import resolved_config
    from crrg.training.stages import stage_config
    from crrg.training.tasks import get_task

    task_obj = get_task(task)
    init_key = getattr(task_obj, "stage_init_key", "model.init")
    configs = [cfg] if names is None else [stage_config(cfg, s, "<previous stage>/model" if i else None, init_key)
                                           for i, s in enumerate(names)]
    check = getattr(task_obj, "validate", None)
    for one in configs:
        one = resolved_config(one)
        if check is not None:
            check(one)
    return len(configs)


def train_command(
    ctx: typer.Context,
    task: str = typer.Argument(..., help="What to train: toy, clip, classifier, rrg, blip, report-lm (or a plug-in task)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config or recipe (trainer:, model:, data:, stages: sections)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Training manifest (JSONL); sets data.manifest."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder: config, checkpoints, logs, exported model (per stage: OUT/<stage>)."),
    devices: int = typer.Option(1, "--devices", help="Processes/GPUs per node; more than 1 runs DDP (gloo on CPU, NCCL on GPU). "
                                                     "Under torchrun/srun: the processes per node the launcher started."),
    num_nodes: int = typer.Option(1, "--num-nodes", help="Nodes; more than 1 needs a launcher on every node (torchrun or srun, see docs/training.md)."),
    accelerator: Optional[str] = typer.Option(None, "--accelerator", help="cpu, gpu (cuda) or auto (a GPU when there is one); sets trainer.accelerator."),
    precision: Optional[str] = typer.Option(None, "--precision", help="32-true, bf16-mixed, 16-mixed or auto (bf16 where the GPU has it, else fp16 on a GPU, "
                                                                      "fp32 on the CPU); sets trainer.precision."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in --out (finished stages are skipped)."),
    stage: Optional[str] = typer.Option(None, "--stage", help="Run one stage of a multi-stage task into --out, with its recipe settings."),
    stages: Optional[str] = typer.Option(None, "--stages", help="Run these stages (comma-separated) of the recipe, each in --out/<stage>."),
    validate_only: bool = typer.Option(False, "--validate-only", help="Check the config of every stage that would run; train nothing."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value: dotted.key=value (repeatable)."),
) -> None:
    """Train TASK; the final model is exported to OUT/model (safetensors + config.json), or OUT/<last stage>/model."""
    from crrg.errors import InputError
    from crrg.training.config import load_config, set_in

    if data is not None and not data.exists():
        raise InputError(f"--data {data} does not exist")
    if not validate_only:
        from crrg.training.launch import check_processes, detect_launch

        check_processes(devices, num_nodes, detect_launch())  # before any task (torch, Lightning) is imported
    flags = [f"trainer.accelerator={accelerator}"] if accelerator is not None else []
    flags += [f"trainer.precision={precision}"] if precision is not None else []
    cfg = load_config(config, [*set_, *flags])  # the flags win over --set and the file
    if data is not None:
        cfg = set_in(cfg, "data.manifest", str(data.resolve()))
    names, cfg = plan(task, cfg, stage, stages)
    if validate_only:
        count = validate(task, cfg, names)
        typer.echo(f"{config or 'config'}: valid for {task}" + (f" ({count} stages: {', '.join(names)})" if names else ""))
        return
    if out is None:
        raise InputError("--out is required (the run folder)")
    from crrg.training.engine import train  # imports torch + Lightning: only after the config is known good

    quiet = _quiet(ctx)
    if quiet:  # Lightning logs through its own handler; --quiet means warnings only
        import logging

        logging.getLogger("lightning").setLevel(logging.WARNING)
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    else:
        info(f"training {task} into {out}" + (f" (stages {', '.join(names)})" if names else "") + (" (resuming)" if resume else ""))
    if names is not None:
        from crrg.training.stages import run_stages

        validate(task, cfg, names)  # every stage's config is checked before the first one trains
        model_dir = run_stages(task, cfg, out, names, resume=resume, devices=devices, num_nodes=num_nodes, progress_bar=not quiet)
    else:
        model_dir = train(task, cfg, out, devices=devices, num_nodes=num_nodes, resume=resume, progress_bar=not quiet)
    typer.echo(str(model_dir))


def register(app: typer.Typer) -> None:
    app.command("train", help="Train a model (task) from a YAML config or recipe; resumable, multi-stage, "
                              "DDP with --devices, several nodes with --num-nodes under torchrun or srun.")(train_command)
