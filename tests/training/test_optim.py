"""One optimizer and learning-rate schedule for every task, set in the trainer section."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from crrg.errors import ConfigError
from crrg.training.config import load_config
from crrg.training.optim import configure_adamw, warmup_cosine, warmup_steps

REPO = Path(__file__).resolve().parents[2]


def _factors(config_overrides: list[str], steps: int) -> list[float]:
    config = load_config(None, ["trainer.max_steps=100", "trainer.lr=0.1", *config_overrides])
    param = torch.nn.Parameter(torch.zeros(1))
    out = configure_adamw(None, [param], config)  # outside a trainer: 1000 total steps
    optimizer, scheduler = out["optimizer"], out.get("lr_scheduler", {}).get("scheduler")
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"] / 0.1)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return lrs


def test_warmup_then_cosine_down_to_the_floor():
    assert warmup_steps(1000, 0.05) == 50 and warmup_steps(10, 0.05) == 1
    assert warmup_cosine(0, 50, 1000) == pytest.approx(1 / 50)
    assert warmup_cosine(49, 50, 1000) == pytest.approx(1.0)
    assert warmup_cosine(525, 50, 1000) == pytest.approx(0.5)
    assert warmup_cosine(1000, 50, 1000) == pytest.approx(0.0)
    assert warmup_cosine(1000, 50, 1000, min_ratio=0.05) == pytest.approx(0.05)
    factors = _factors(["trainer.warmup_fraction=0.1", "trainer.min_lr_ratio=0.2"], 120)
    assert factors[0] == pytest.approx(1 / 100) and factors[99] == pytest.approx(1.0)
    assert factors[100] == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(0)))
    assert all(a >= b for a, b in zip(factors[99:], factors[100:]))  # only down after the warmup
    assert _factors(["trainer.schedule=constant"], 5) == [1.0] * 5


def test_schedule_settings_are_checked():
    for bad in ("trainer.schedule=linear", "trainer.warmup_fraction=1.5", "trainer.min_lr_ratio=-1"):
        with pytest.raises(ConfigError):
            load_config(None, ["trainer.max_steps=1", bad])


def test_a_schedule_setting_left_in_the_model_section_is_named():
    from crrg.clip.task import ClipTask

    config = load_config(REPO / "configs/clip/tiny.yaml", ["model.warmup_fraction=0.1"])
    with pytest.raises(ConfigError, match="trainer.warmup_fraction"):
        ClipTask().validate(config)


def test_no_task_builds_its_own_schedule():
    """Every family goes through crrg.training.optim: no other module constructs an LR scheduler."""
    src = REPO / "src" / "crrg"
    own = [str(p.relative_to(src)) for p in src.rglob("*.py")
           if "lr_scheduler." in p.read_text() and p.name != "optim.py"]
    assert own == []


def _plateau(*overrides: str) -> tuple[object, torch.optim.Optimizer]:
    from crrg.training.config import TrainerConfig
    from crrg.training.optim import PlateauSchedule

    cfg = TrainerConfig.from_config(load_config(None, ["trainer.max_steps=10", "trainer.lr=0.1", "trainer.schedule=plateau",
                                                       "trainer.plateau_monitor=val_loss", *overrides]))
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    schedule = PlateauSchedule(cfg)
    schedule.attach([optimizer])
    return schedule, optimizer


def _lrs(schedule, optimizer, values: list[float]) -> list[float]:
    out = []
    for value in values:
        schedule.observe(value)
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_plateau_lowers_the_lr_once_the_metric_stops_improving():
    schedule, optimizer = _plateau("trainer.plateau_patience=2", "trainer.plateau_factor=0.5", "trainer.plateau_threshold=0.01")
    # improving, then three validations no better than 1 % below the best (0.8): the third exceeds patience 2
    assert _lrs(schedule, optimizer, [1.0, 0.8, 0.799, 0.81, 0.805, 0.7]) == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05])
    # mode max (e.g. an AUC), with a cooldown of one validation after each drop
    schedule, optimizer = _plateau("trainer.plateau_mode=max", "trainer.plateau_patience=0", "trainer.plateau_cooldown=1",
                                   "trainer.plateau_threshold=0")
    assert _lrs(schedule, optimizer, [0.5, 0.6, 0.6, 0.6, 0.6]) == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_plateau_is_stepped_by_the_engine_callback_not_per_optimizer_step():
    from types import SimpleNamespace

    from crrg.training.engine import _callbacks
    from crrg.training.optim import PlateauSchedule

    config = load_config(None, ["trainer.max_steps=10", "trainer.schedule=plateau", "trainer.monitor=val_loss"])
    assert "lr_scheduler" not in configure_adamw(None, [torch.nn.Parameter(torch.zeros(1))], config)
    from crrg.training.config import TrainerConfig

    cfg = TrainerConfig.from_config(config)
    plateau = [c for c in _callbacks(cfg, Path("/nonexistent"), None) if isinstance(c, PlateauSchedule)]
    assert len(plateau) == 1 and plateau[0].metric == "val_loss"  # falls back to trainer.monitor

    schedule, optimizer = _plateau()
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={"val_acc": torch.tensor(1.0)})
    with pytest.raises(ConfigError, match="val_loss"):
        schedule.on_validation_end(trainer, None)  # the watched metric was never logged
    trainer.callback_metrics["val_loss"] = torch.tensor(0.5)
    schedule.on_validation_end(trainer, None)
    assert schedule.schedulers[0].best == pytest.approx(0.5)


def test_plateau_settings_are_checked():
    base = ["trainer.max_steps=1", "trainer.schedule=plateau", "trainer.plateau_monitor=val_loss"]
    with pytest.raises(ConfigError, match="plateau_monitor"):
        load_config(None, ["trainer.max_steps=1", "trainer.schedule=plateau"])  # nothing to watch
    for bad in ("trainer.plateau_factor=1.5", "trainer.plateau_factor=0", "trainer.plateau_mode=median",
                "trainer.plateau_patience=-1", "trainer.plateau_cooldown=-1", "trainer.plateau_threshold=-0.1",
                "trainer.plateau_patience=2.5", "trainer.schedule=step"):
        with pytest.raises(ConfigError):
            load_config(None, [*base, bad])


def test_plateau_state_comes_back_with_the_configs_settings():
    schedule, optimizer = _plateau("trainer.plateau_patience=0", "trainer.plateau_threshold=0")
    _lrs(schedule, optimizer, [1.0, 2.0])  # one drop: 0.1 -> 0.05
    saved = schedule.state_dict()
    restored, optimizer2 = _plateau("trainer.plateau_patience=3", "trainer.plateau_threshold=0")
    optimizer2.param_groups[0]["lr"] = optimizer.param_groups[0]["lr"]  # Lightning restores the optimizer itself
    restored.load_state_dict(saved)
    restored.attach([optimizer2])
    sched = restored.schedulers[0]
    assert sched.best == 1.0 and sched.last_epoch == 2 and sched.patience == 3  # progress kept, new patience used
    assert _lrs(restored, optimizer2, [1.5, 1.5, 1.5, 1.5]) == pytest.approx([0.05, 0.05, 0.05, 0.025])
