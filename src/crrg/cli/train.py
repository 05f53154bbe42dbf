"""``crrg train TASK``: train any registered task with the one engine (see crrg.training.engine)."""

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


def train_command(
    ctx: typer.Context,
    task: str = typer.Argument(..., help="What to train: toy, clip, classifier, rrg, blip (or a plug-in task)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (trainer:, model:, data: sections)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Training manifest (JSONL); sets data.manifest."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: config, checkpoints, logs, exported model."),
    devices: int = typer.Option(1, "--devices", help="Processes/GPUs; more than 1 runs DDP (gloo on CPU, NCCL on GPU)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in --out."),
    stage: Optional[str] = typer.Option(None, "--stage", help="Training stage for multi-stage tasks; sets stage."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value: dotted.key=value (repeatable)."),
) -> None:
    """Train TASK; the final model is exported to OUT/model (safetensors + config.json)."""
    from crrg.training.config import load_config, set_in

    if data is not None and not data.exists():
        from crrg.errors import InputError

        raise InputError(f"--data {data} does not exist")
    cfg = load_config(config, set_)
    if data is not None:
        cfg = set_in(cfg, "data.manifest", str(data.resolve()))
    if stage is not None:
        cfg = set_in(cfg, "stage", stage)
    from crrg.training.engine import train  # imports torch + Lightning: only after the config is known good

    quiet = _quiet(ctx)
    if quiet:  # Lightning logs through its own handler; --quiet means warnings only
        import logging

        logging.getLogger("lightning").setLevel(logging.WARNING)
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    else:
        info(f"training {task} into {out}" + (" (resuming)" if resume else ""))
    model_dir = train(task, cfg, out, devices=devices, resume=resume, progress_bar=not quiet)
    typer.echo(str(model_dir))


def register(app: typer.Typer) -> None:
    app.command("train", help="Train a model (task) from a YAML config; resumable, DDP with --devices.")(train_command)
