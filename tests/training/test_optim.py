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
