"""The one optimizer and learning-rate schedule of every training task.

AdamW over the given parameter groups, with the schedule of the ``trainer:`` section
(:class:`crrg.training.config.TrainerConfig`). One place, so a recipe means the same schedule for
CLIP, the classifier, every rrg stage, ClinicalBLIP and the report LM, and a change of it is a config
change:

``warmup_cosine`` (default)
    a linear warmup over ``warmup_fraction`` of the optimizer steps (at least one step), then a half
    cosine from ``lr`` down to ``min_lr_ratio * lr``, stepped once per optimizer step;
``constant``
    ``lr`` throughout;
``plateau``
    RGRG's schedule (Tanida et al., CVPR 2023): ``ReduceLROnPlateau`` on a validation metric, stepped
    once per *validation* (every ``val_check_interval`` batches and at the end of an epoch), not per
    optimizer step, so ``plateau_patience`` counts validations as RGRG's does. Lightning's own plateau
    support steps per optimizer step or epoch; :class:`PlateauSchedule` (a callback the engine adds)
    steps it after each validation instead and stores its state in every checkpoint, so a resumed run
    continues with the same best value, bad-validation count and cooldown.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable

import torch
from lightning.pytorch.callbacks import Callback

from crrg.errors import ConfigError
from crrg.training.config import TrainerConfig

log = logging.getLogger(__name__)


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """The learning-rate factor at optimizer step ``step`` (0-based) of ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(total: int, fraction: float) -> int:
    return max(1, int(fraction * total))


def total_steps(module: Any, default: int = 1000) -> int:
    """The optimizer steps of the whole run, as Lightning estimates them (``default`` outside a trainer)."""
    trainer = getattr(module, "_trainer", None)
    return max(1, int(trainer.estimated_stepping_batches)) if trainer is not None else default


def configure_adamw(module: Any, params: Iterable[Any], config: dict) -> dict[str, Any]:
    """``configure_optimizers``' answer: AdamW on ``params`` (tensors or parameter groups) with the
    trainer section's lr, weight decay and schedule."""
    cfg = TrainerConfig.from_config(config)
    optimizer = torch.optim.AdamW(list(params), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule in ("constant", "plateau"):  # plateau: stepped per validation by PlateauSchedule
        return {"optimizer": optimizer}
    scheduler = warmup_cosine_scheduler(optimizer, total_steps(module), cfg.warmup_fraction, cfg.min_lr_ratio)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def warmup_cosine_scheduler(optimizer: torch.optim.Optimizer, total: int, warmup_fraction: float,
                            min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """The one schedule as a scheduler stepped once per optimizer step (also for loops outside the
    engine, e.g. :mod:`crrg.clip.probe_finetune`)."""
    warmup = warmup_steps(total, warmup_fraction)

    def factor(step: int) -> float:  # a plain function: LambdaLR's state_dict then stores no object
        return warmup_cosine(step, warmup, total, min_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# What a ReduceLROnPlateau has learnt while training (its other state is its settings).
PLATEAU_PROGRESS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch", "_last_lr")


class PlateauSchedule(Callback):
    """``trainer.schedule: plateau``: one ``ReduceLROnPlateau`` per optimizer, stepped with the
    monitored metric after every validation (sanity checks excluded); its state travels in checkpoints."""

    def __init__(self, cfg: TrainerConfig) -> None:
        self.metric = cfg.plateau_metric
        self.settings = {"mode": cfg.plateau_direction, "factor": cfg.plateau_factor, "patience": cfg.plateau_patience,
                         "threshold": cfg.plateau_threshold, "cooldown": cfg.plateau_cooldown}
        self.schedulers: list[torch.optim.lr_scheduler.ReduceLROnPlateau] = []
        self._restored: list[dict] | None = None
        self._validation_due = False  # a validation runs after the current batch (see on_train_batch_end)
        self._replay = False

    def attach(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """Build the schedulers (restoring a checkpoint's state, when one was loaded)."""
        self.schedulers = [torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **self.settings) for opt in optimizers]
        if self._restored is not None:
            if len(self._restored) != len(self.schedulers):
                raise ConfigError(f"the checkpoint holds {len(self._restored)} plateau schedule state(s) for "
                                  f"{len(self.schedulers)} optimizer(s); resume with the config it was trained with")
            for scheduler, state in zip(self.schedulers, self._restored):
                # the progress comes from the checkpoint; the settings from the config (a resumed run
                # may change them: the engine warns about every changed setting)
                scheduler.load_state_dict({**scheduler.state_dict(), **{k: state[k] for k in PLATEAU_PROGRESS if k in state}})
            self._restored = None

    def observe(self, value: float) -> None:
        """One validation's value of the metric: step every scheduler (and say when the LR drops)."""
        for scheduler in self.schedulers:
            before = [group["lr"] for group in scheduler.optimizer.param_groups]
            scheduler.step(value)
            after = [group["lr"] for group in scheduler.optimizer.param_groups]
            if after != before:
                log.info("plateau schedule: %s stopped improving (%.6g); learning rate %s -> %s", self.metric, value,
                         f"{before[0]:.3g}", f"{after[0]:.3g}")

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.attach(trainer.optimizers)
        if self._replay:
            # The checkpoint was written after a batch that validates, before the validation ran, and
            # Lightning skips that validation on resume: run it here, so the schedule sees what an
            # uninterrupted run saw (validation draws no random numbers and changes no weights).
            self._replay = False
            log.info("plateau schedule: running the validation that was due when the checkpoint was written")
            trainer.validating = True
            trainer.fit_loop.epoch_loop.val_loop.run()
            trainer.training = True

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Step checkpoints are written in this hook (checkpoint callbacks run after this one), before
        # the batch's validation: record whether one is due, so a resume from this checkpoint can run it.
        try:  # Lightning's own test (private, Lightning 2.x); without it a resume may miss one validation
            loop = trainer.fit_loop.epoch_loop
            self._validation_due = bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
        except (AttributeError, TypeError):
            self._validation_due = False

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._validation_due = False
        if trainer.sanity_checking or not self.schedulers:
            return
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            raise ConfigError(f"trainer.schedule plateau watches {self.metric!r}, which validation did not log "
                              f"(logged: {sorted(trainer.callback_metrics)}); set trainer.plateau_monitor")
        self.observe(float(value))

    def state_dict(self) -> dict[str, Any]:
        if self.schedulers:
            return {"schedulers": [scheduler.state_dict() for scheduler in self.schedulers], "validation_due": self._validation_due}
        return {"schedulers": self._restored} if self._restored is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("schedulers") is not None:
            self._restored = list(state_dict["schedulers"])
        self._replay = bool(state_dict.get("validation_due", False))
