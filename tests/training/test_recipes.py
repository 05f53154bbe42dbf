"""Recipes through the CLI: every shipped config validates, and a recipe's stages and per-stage
settings are what ``crrg train`` runs (issue 19 item 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from crrg.cli.main import app

REPO = Path(__file__).resolve().parents[2]
TASKS = ("toy", "clip", "classifier", "rrg", "blip", "report-lm")
# configs/ folders whose YAML files are not `crrg train` recipes, and what reads them instead.
NOT_TRAINING = {"real": "benchmarks/bench_real_classifier.py"}


def task_of(path: Path) -> str | None:
    """A recipe's task: its ``task:`` key, else its folder (configs/clip/...), else its name's first word."""
    config = yaml.safe_load(path.read_text()) or {}
    if config.get("task"):
        return config["task"]
    rel = path.relative_to(REPO / "configs")
    if rel.parts[0] in NOT_TRAINING:
        return None
    for candidate in (rel.parts[0], path.stem, path.stem.split("-")[0].split("_")[0]):
        if candidate in TASKS:
            return candidate
    raise AssertionError(f"{rel}: cannot tell its task; add a top-level 'task:' key")


ALL_CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml"))


def continued_from(path: Path) -> list[str]:
    """A recipe that continues a trained model leaves ``model.init`` null for the command line to name."""
    config = yaml.safe_load(path.read_text()) or {}
    model = config.get("model") or {}
    return ["--set", "model.init=RUN/previous/model"] if "init" in model and model["init"] is None else []


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_shipped_config_validates_through_the_cli(path):
    task = task_of(path)
    if task is None:
        pytest.skip(f"not a training recipe (read by {NOT_TRAINING[path.relative_to(REPO / 'configs').parts[0]]})")
    result = CliRunner().invoke(app, ["train", task, "--config", str(path), "--validate-only", *continued_from(path)])
    assert result.exit_code == 0, result.output
    assert "valid for" in result.output


def test_a_typo_in_one_stage_is_refused_before_anything_trains(tmp_path):
    recipe = yaml.safe_load((REPO / "configs" / "rrg" / "default.yaml").read_text())
    recipe["stages"]["joint"]["trainer"]["max_epoch"] = 2
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "crrg", "train", "rrg", "--config", str(path), "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "max_epoch" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def _leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


RECIPES = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "stages" in (yaml.safe_load(p.read_text()) or {}))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_crrg_train_applies_every_per_stage_setting_of_the_recipe(path, tmp_path, monkeypatch):
    """The engine must receive, for each stage the recipe lists, every setting of that stage."""
    from crrg.training import engine

    calls = []

    def fake_train(task, config, out_dir, **kwargs):
        calls.append((task, config, Path(out_dir)))
        model = Path(out_dir) / "model"
        model.mkdir(parents=True)
        (model / "config.json").write_text("{}")
        return model

    monkeypatch.setattr(engine, "train", fake_train)
    recipe = yaml.safe_load(path.read_text())
    task = task_of(path)
    result = CliRunner().invoke(app, ["train", task, "--config", str(path), "--out", str(tmp_path / "run"),
                                      "--set", "data.manifest=m.jsonl", *continued_from(path)])
    assert result.exit_code == 0, result.output
    from crrg.training.tasks import get_task

    order = [s for s in get_task(task).stages if s in recipe["stages"]]
    assert [c[2].name for c in calls] == order
    for i, (_, config, out) in enumerate(calls):
        stage = out.name
        assert config["stage"] == stage and "stages" not in config
        for key, value in _leaves(recipe["stages"][stage] or {}).items():
            node = config
            for part in key.split("."):
                node = node[part]
            assert node == value, f"{path.name}: stages.{stage}.{key} = {value!r} not applied (got {node!r})"
        if i:  # each stage starts from the previous stage's export
            assert config["model"]["init"] == str(calls[i - 1][2] / "model")


@pytest.mark.slow
def test_cli_runs_the_selected_stages_with_their_settings_end_to_end(tmp_path):
    from tests.rrg.conftest import TINY_CONFIG, make_studies

    manifest = make_studies(tmp_path / "data", n=6)
    recipe = {"model": {"config": TINY_CONFIG}, "trainer": {"max_steps": 1, "batch_size": 2, "log_every_n_steps": 1},
              "stages": {"detector": {"trainer": {"max_steps": 3, "lr": 2.0e-4}},
                         "classifiers": {"trainer": {"max_steps": 2, "batch_size": 4}, "loss": {"abnormal_pos_weight": 3.0}},
                         "joint": {"trainer": {"max_steps": 4}}}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["--quiet", "train", "rrg", "--config", str(path), "--data", str(manifest),
                                      "--out", str(tmp_path / "run"), "--stages", "detector,classifiers"])
    assert result.exit_code == 0, result.output
    for stage, steps in (("detector", 3), ("classifiers", 2)):
        assert json.loads((tmp_path / "run" / stage / "metrics.json").read_text())["global_step"] == steps
    detector = json.loads((tmp_path / "run" / "detector" / "config.json").read_text())
    classifiers = json.loads((tmp_path / "run" / "classifiers" / "config.json").read_text())
    assert detector["trainer"]["lr"] == 2.0e-4 and classifiers["trainer"]["batch_size"] == 4
    assert classifiers["loss"]["abnormal_pos_weight"] == 3.0
    assert not (tmp_path / "run" / "joint").exists()
    assert result.output.strip().endswith(str(tmp_path / "run" / "classifiers" / "model"))
