"""`crrg train` and `crrg models` from the command line: one-line errors, listing, info."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from crrg.cli.main import app
from crrg.training.seeding import step_seed

REPO = Path(__file__).resolve().parents[2]


def crrg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crrg", *args], capture_output=True, text=True, timeout=120)


def test_bad_config_is_one_line_with_exit_code_2(tmp_path):
    result = crrg("train", "toy", "--config", str(REPO / "configs" / "toy.yaml"), "--out", str(tmp_path / "r"), "--set", "trainer.max_step=3")
    assert result.returncode == 2
    assert "unknown trainer setting(s) ['max_step']" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()  # nothing written before the config is known good


def test_missing_data_manifest_is_reported(tmp_path):
    result = crrg("train", "toy", "--config", str(REPO / "configs" / "toy.yaml"), "--out", str(tmp_path / "r"), "--data", str(tmp_path / "none.jsonl"))
    assert result.returncode == 2 and "none.jsonl does not exist" in result.stderr


def test_models_list_and_info(tmp_path):
    from crrg.models.registry import list_models, save_pretrained
    from crrg.training import toy  # noqa: F401  registers the toy-mlp family

    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()][: len(list_models())] == list_models()

    from crrg.models.registry import build_model

    model = build_model({"family": "toy-mlp", "in_features": 3, "hidden": 5, "out_features": 2})
    save_pretrained(model, tmp_path / "m")
    info = runner.invoke(app, ["models", "info", str(tmp_path / "m")])
    assert info.exit_code == 0, info.output
    data = json.loads(info.stdout)
    assert data["family"] == "toy-mlp" and data["weights"]["parameters"] == 3 * 5 + 5 + 5 * 2 + 2
    assert sum(p.numel() for p in model.parameters()) == data["weights"]["parameters"]

    if list_models():
        named = json.loads(runner.invoke(app, ["models", "info", list_models()[0]]).stdout)
        assert named["kind"] == "configuration" and named["family"]


def test_models_info_unknown_name_is_a_one_line_error():
    result = crrg("models", "info", "no-such-model")
    assert result.returncode == 2 and "neither a model name nor a saved-model folder" in result.stderr


def test_step_seed_is_deterministic_and_varies():
    assert step_seed(0, 1, 2, 0) == step_seed(0, 1, 2, 0)
    assert len({step_seed(0, e, b, r) for e in range(3) for b in range(5) for r in range(2)}) == 30
