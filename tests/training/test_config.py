"""Config loading, dotted overrides and the checked trainer section."""

from __future__ import annotations

from pathlib import Path

import pytest

from crrg.errors import ConfigError
from crrg.training.config import TrainerConfig, apply_overrides, load_config, resolved_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_toy_config_loads_with_typed_overrides():
    cfg = load_config(REPO / "configs" / "toy.yaml", ["trainer.max_steps=3", "trainer.lr=1e-4", "model.hidden=[4, 4]", "data.new.key=x"])
    assert cfg["trainer"]["max_steps"] == 3
    assert cfg["trainer"]["lr"] == pytest.approx(1e-4)
    assert cfg["model"]["hidden"] == [4, 4]
    assert cfg["data"]["new"] == {"key": "x"}
    assert cfg["model"]["family"] == "toy-mlp"  # untouched keys survive


def test_override_null_and_resolved_defaults():
    cfg = load_config(None, ["trainer.max_epochs=2", "trainer.gradient_clip=null"])
    full = resolved_config(cfg)["trainer"]
    assert full["max_epochs"] == 2 and full["max_steps"] is None and full["gradient_clip"] is None
    assert full["checkpoint_every_n_steps"] == TrainerConfig.checkpoint_every_n_steps


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("trainer: {max_step: 10}\n", [], "unknown trainer setting"),
        ("trainer: {max_steps: ten}\n", [], "trainer.max_steps must be"),
        ("trainer: {max_steps: 10, batch_size: 0}\n", [], "batch_size must be at least 1"),
        ("trainer: {batch_size: 4}\n", [], "set max_steps or max_epochs"),
        ("trainer: [1, 2]\n", [], "must be a mapping"),
        ("- just\n- a list\n", [], "must hold a mapping"),
        ("trainer: {max_steps: 10\n", [], "not valid YAML at line"),
        ("trainer: {max_steps: 10}\n", ["trainer.max_steps"], "not of the form"),
        ("trainer: {max_steps: 10}\n", ["trainer.max_steps.x=1"], "not a section"),
        ("trainer: {max_steps: 10}\n", ["trainer.lr=-1"], "lr must be positive"),
        ("trainer: {max_steps: 10, deterministic: maybe}\n", [], "deterministic"),
    ],
)
def test_bad_configs_raise_config_error_naming_the_problem(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), overrides)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_do_not_mutate_input():
    base = {"trainer": {"max_steps": 1}}
    out = apply_overrides(base, ["trainer.max_steps=5"])
    assert base["trainer"]["max_steps"] == 1 and out["trainer"]["max_steps"] == 5


def test_precision_auto_is_bf16_where_the_gpu_has_it(monkeypatch):
    import torch

    from crrg.training.engine import resolve_precision

    assert resolve_precision("16-mixed", "auto") == "16-mixed"  # an explicit choice is kept
    assert resolve_precision("auto", "cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto", "auto") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "auto") == "bf16-mixed" and resolve_precision("auto", "gpu") == "bf16-mixed"
    assert resolve_precision("auto", "cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100 or T4
    assert resolve_precision("auto", "cuda") == "16-mixed"
