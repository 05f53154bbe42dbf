"""The one training engine: ``train(task, config, out_dir, devices, resume, num_nodes=...)``.

Every trainable model in crrg is a *task* (see :mod:`crrg.training.tasks` for the three methods a
task provides). The engine owns everything that is the same for all of them, so each model gets
resume, DDP, logs and exports without writing any of it:

run folder (``out_dir``)::

    config.json            the resolved config (trainer defaults filled in), written before training
    checkpoints/last.ckpt  full resume state (weights, optimizer, LR scheduler, loop counters,
                           data position; random draws are reseeded per step, see seeding.py), replaced atomically every
                           ``trainer.checkpoint_every_n_steps`` and at the end
    checkpoints/stepNNNNNNNN.ckpt   the newest ``trainer.keep_checkpoints`` step checkpoints
    checkpoints/best/      best checkpoint by ``trainer.monitor`` (when set)
    logs/csv/metrics.csv   CSV log (a resumed session adds logs/csv-resumeN/);  logs/tensorboard/
    model/                 the final model, exported by the task (safetensors + config.json)
    best-model/            the best model by ``trainer.monitor`` (when set)
    metrics.json           summary: steps, epochs, last logged metrics, wall time

Every checkpoint has a ``.sha256`` beside it and is read weights-only (:mod:`crrg.training.checkpoint`):
a damaged or planted file is refused, never loaded or run.

Resume (``resume=True``) continues from ``checkpoints/last.ckpt`` (or the newest verified step file)
with the same step count, optimizer and scheduler state and data position (random draws are
seeded per step and per sample); with
``trainer.deterministic`` the result equals an uninterrupted run. Without ``resume`` a folder that
already holds checkpoints is refused rather than overwritten.

``devices > 1`` runs DDP: gloo on CPU, NCCL on GPUs. The engine starts one fresh Python process per
device (:mod:`crrg.training.worker`, started by :func:`crrg.training.launch.launch_workers`) with the
torch.distributed environment set, and waits for them.
Fresh processes rather than forks: a fork of a process whose OpenMP pool has run deadlocks, and
rather than Lightning's re-run of ``sys.argv``: that works from a notebook or a test as well. If one
worker dies, the others are stopped and :class:`WorkerFailed` is raised; ``resume=True`` continues.

Started by a cluster launcher instead (torchrun, or srun under SLURM: :mod:`crrg.training.launch`),
the engine starts no processes: this process is one rank, trained directly, and Lightning's cluster
environment (TorchElasticEnvironment / SLURMEnvironment) takes the ranks and addresses from the
launcher. That is the only way to train on several nodes (``num_nodes > 1``). In every case only global
rank 0 writes config.json, checkpoints, metrics.json and the exported models; on several nodes ``out_dir``
must be on a file system every node sees (a resume reads it on every rank).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable

from lightning.pytorch.callbacks import Callback

from crrg.errors import ConfigError
from crrg.io import atomic_write_json
from crrg.training.checkpoint import LAST, AtomicCheckpointIO, find_resume_checkpoint, has_checkpoints, load_checkpoint_file
from crrg.training.config import PRECISION_AUTO, TrainerConfig, resolved_config
from crrg.training.launch import WorkerFailed, check_processes, detect_launch, is_rank_zero, launch_workers  # noqa: F401  (WorkerFailed: re-exported)
from crrg.training.sampling import LoaderOptions, make_resumable, make_sharded
from crrg.training.seeding import StepSeed
from crrg.training.tasks import Task, get_task

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
MODEL_DIR = "model"
BEST_MODEL_DIR = "best-model"


def _config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def loader_options(cfg: TrainerConfig, on_cuda: bool) -> LoaderOptions:
    """The trainer section's data-loading settings; ``pin_memory: null`` pins only when training on CUDA."""
    pin = on_cuda if cfg.pin_memory is None else cfg.pin_memory
    return LoaderOptions(pin_memory=pin, persistent_workers=cfg.persistent_workers, prefetch_factor=cfg.prefetch_factor)


def resolve_precision(precision: str, accelerator: str) -> str:
    """``precision: auto``: bf16 mixed precision where the GPU has bf16 (Ampere and later), fp16 mixed
    precision on an older GPU, full precision on the CPU (where mixed precision is slower, not faster)."""
    if precision != PRECISION_AUTO:
        return precision
    import torch

    cuda = accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available())
    if not cuda:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"


def _wrap_dataloaders(datamodule: Any, cfg: TrainerConfig) -> None:
    """Route the task's train/val loaders through the resumable, sharded sampler (see sampling.py)."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    def options(trainer: Any) -> LoaderOptions:
        return loader_options(cfg, trainer.strategy.root_device.type == "cuda")

    if is_overridden("train_dataloader", datamodule):
        train_loader = datamodule.train_dataloader

        def resumable_train_loader() -> Any:
            trainer = datamodule.trainer
            return make_resumable(train_loader(), seed=cfg.seed, rank=trainer.global_rank, world_size=trainer.world_size,
                                  options=options(trainer))

        datamodule.train_dataloader = resumable_train_loader
    if is_overridden("val_dataloader", datamodule):
        val_loader = datamodule.val_dataloader

        def sharded_val_loader() -> Any:
            trainer = datamodule.trainer
            return make_sharded(val_loader(), rank=trainer.global_rank, world_size=trainer.world_size, options=options(trainer))

        datamodule.val_dataloader = sharded_val_loader


def _csv_version(logs: Path, resuming: bool) -> str:
    """Lightning's CSVLogger deletes an existing metrics.csv, so each resumed session logs to its own folder."""
    if not resuming or not (logs / "csv").exists():
        return "csv"
    n = 1
    while (logs / f"csv-resume{n}").exists():
        n += 1
    return f"csv-resume{n}"


def _strategy(cfg: TrainerConfig, processes: int) -> Any:
    if cfg.strategy is not None:
        return cfg.strategy
    # In a worker the processes already exist (LOCAL_RANK is set, or a launcher's variables), so
    # Lightning's "ddp" only joins the process group: gloo on CPU, NCCL on GPU.
    return "auto" if processes == 1 else "ddp"


def _callbacks(cfg: TrainerConfig, ckpt_dir: Path, summary: RunSummary) -> list[Any]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from crrg.training.optim import PlateauSchedule

    callbacks: list[Any] = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="step{step:08d}",
            auto_insert_metric_name=False,
            monitor="step",  # keeps the newest `keep_checkpoints` step files
            mode="max",
            save_top_k=cfg.keep_checkpoints,
            every_n_train_steps=cfg.checkpoint_every_n_steps,
            save_last=True,
        ),
        StepSeed(cfg.seed),
        summary,
        FinalCheckpoint(ckpt_dir / LAST),
    ]
    if cfg.schedule == "plateau":
        callbacks.append(PlateauSchedule(cfg))
    if cfg.monitor:
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir / "best",
                filename="best",
                monitor=cfg.monitor,
                mode=cfg.monitor_mode,
                save_top_k=1,
                save_on_train_epoch_end=False,
                enable_version_counter=False,
            )
        )
    return callbacks


class FinalCheckpoint(Callback):
    """Write last.ckpt when training ends, so a finished run resumes as finished."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        trainer.save_checkpoint(self.path)


class RunSummary(Callback):
    """Write metrics.json (on rank 0, where the loop counters are) when training ends."""

    def __init__(self, path: Path, info: dict) -> None:
        self.path, self.info = path, info
        self.started = time.time()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        summary = {
            **self.info,
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "world_size": trainer.world_size,
            "wall_seconds": round(time.time() - self.started, 3),
            "metrics": metrics,
        }
        atomic_write_json(self.path, summary)


def train(
    task: str | Task,
    config: dict,
    out_dir: str | os.PathLike,
    devices: int = 1,
    resume: bool = False,
    *,
    num_nodes: int = 1,
    progress_bar: bool = True,
    extra_callbacks: Iterable[Any] = (),
) -> Path:
    """Train ``task`` with ``config`` into ``out_dir``; return the folder of the exported final model.

    ``task`` is a registered task name or a task object. ``devices`` is processes (GPUs) per node;
    ``num_nodes > 1`` needs a cluster launcher (module docstring). Raises :class:`ConfigError` for a bad
    config, an unknown task, device counts that do not fit the launch, or a run folder that already
    holds checkpoints without ``resume``.
    """

    launch = detect_launch()
    check_processes(devices, num_nodes, launch)
    task_obj = get_task(task) if isinstance(task, str) else task
    task_name = task if isinstance(task, str) else type(task).__name__
    config = resolved_config(config)  # validates the trainer section
    stages = getattr(task_obj, "stages", None)
    if stages and config.get("stage") is not None and config["stage"] not in stages:
        raise ConfigError(f"task {task_name!r} has no stage {config['stage']!r}; its stages: {', '.join(stages)}")

    out = Path(out_dir)
    ckpt_dir = out / CHECKPOINT_DIR
    resume_from: Path | None = None
    if resume:
        resume_from = find_resume_checkpoint(ckpt_dir)
        if resume_from is None:
            log.warning("--resume: no checkpoint in %s yet, starting from the beginning", ckpt_dir)
    elif has_checkpoints(ckpt_dir):
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")

    if is_rank_zero():
        previous = out / CONFIG_FILE
        if resume_from is not None and previous.is_file():
            changed = _config_differences(json.loads(previous.read_text()), config)
            if changed:
                log.warning("resuming with a changed config: %s", "; ".join(changed))
        atomic_write_json(previous, config)

    if launch is None and devices > 1:
        if not isinstance(task, str):
            raise ConfigError("training on several devices needs a registered task name (workers look it up by name)")
        launch_workers(task, out, devices, resume_from, progress_bar)
    else:  # one process, or this rank of a torchrun / srun launch
        fit(task_obj, task_name, config, out, devices=devices, num_nodes=num_nodes, resume_from=resume_from,
            progress_bar=progress_bar, extra_callbacks=extra_callbacks)
    return out / MODEL_DIR


def fit(
    task_obj: Task,
    task_name: str,
    config: dict,
    out: Path,
    *,
    devices: int,
    resume_from: Path | None,
    num_nodes: int = 1,
    progress_bar: bool = True,
    extra_callbacks: Iterable[Any] = (),
) -> None:
    """Fit in this process (one device, or one DDP rank of a worker); rank 0 exports. Use :func:`train`."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    cfg = TrainerConfig.from_config(config)
    ckpt_dir = out / CHECKPOINT_DIR
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = task_obj.build_module(config)
    datamodule = task_obj.build_datamodule(config)
    _wrap_dataloaders(datamodule, cfg)

    summary = RunSummary(out / METRICS_FILE, {"task": task_name, "resumed_from": str(resume_from) if resume_from else None})
    try:
        trainer = L.Trainer(
            default_root_dir=out,
            accelerator=cfg.accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=_strategy(cfg, devices * num_nodes),
            precision=resolve_precision(cfg.precision, cfg.accelerator),
            max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
            max_epochs=cfg.max_epochs,
            accumulate_grad_batches=cfg.accumulate_grad_batches,
            gradient_clip_val=cfg.gradient_clip,
            log_every_n_steps=cfg.log_every_n_steps,
            val_check_interval=cfg.val_check_interval,
            limit_val_batches=cfg.limit_val_batches,
            num_sanity_val_steps=0,  # a sanity pass would draw random numbers a resumed run does not
            deterministic=cfg.deterministic,
            use_distributed_sampler=False,  # the engine's ShardSampler shards and resumes
            callbacks=[*_callbacks(cfg, ckpt_dir, summary), *extra_callbacks],
            logger=[
                CSVLogger(save_dir=out, name="logs", version=_csv_version(out / "logs", resume_from is not None)),
                TensorBoardLogger(save_dir=out, name="logs", version="tensorboard", default_hp_metric=False),
            ],
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=progress_bar,
            enable_model_summary=progress_bar,
        )
    except (MisconfigurationException, ValueError) as exc:
        raise ConfigError(f"trainer settings rejected: {exc}") from None

    # AtomicCheckpointIO verifies the checksum and loads weights-only, whatever is asked here.
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None, weights_only=True)

    model_dir = out / MODEL_DIR
    if trainer.is_global_zero:
        task_obj.export(module, model_dir)
        best_dir = _export_best(task_obj, module, ckpt_dir / "best", out / BEST_MODEL_DIR) if cfg.monitor else None
        metrics_path = out / METRICS_FILE
        summary_data = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        summary_data.update({"model_dir": str(model_dir), "best_model_dir": str(best_dir) if best_dir else None})
        atomic_write_json(metrics_path, summary_data)
        log.info("trained %s: model in %s", task_name, model_dir)


def _export_best(task_obj: Task, module: Any, best_ckpt_dir: Path, out_dir: Path) -> Path | None:
    """Load the best checkpoint's weights into ``module`` and export it; the final export is already written."""
    ckpts = sorted(best_ckpt_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime) if best_ckpt_dir.is_dir() else []
    if not ckpts:
        log.warning("no best checkpoint in %s (was the monitored metric logged?)", best_ckpt_dir)
        return None
    state = load_checkpoint_file(ckpts[-1])["state_dict"]
    module.load_state_dict(state)
    task_obj.export(module, out_dir)
    return out_dir
