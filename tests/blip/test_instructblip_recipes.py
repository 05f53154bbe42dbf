"""The InstructBLIP ClinicalBLIP recipes (configs/{mimic,iu_xray}/blip-instructblip-stage*.yaml) end to end.

Each recipe is read unchanged; `--set` shrinks it as tests/data/test_recipes.py does and points
model.hub_id at a tiny stand-in saved like a hub repository (T5 for MIMIC-CXR, OPT for IU X-Ray, so both
kinds of language model run), on fixtures in the datasets' real layouts prepared by `crrg data prepare`.
Stage 1, then stage 2 from stage 1's folder, then `crrg report` from stage 2's folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from crrg.cli.main import app
from crrg.records import read_manifest

from ..data.test_recipes import manifests, toy_sets, train  # noqa: F401  (manifests: a fixture)
from .standins import make_tiny_instructblip

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dataset, data, lm", [("mimic", "mimic", "t5"), ("iu_xray", "iu", "opt")])
def test_instructblip_recipes_train_both_stages_and_write_a_report(dataset, data, lm, manifests, tmp_path):  # noqa: F811
    standin = make_tiny_instructblip(tmp_path / f"instructblip-{lm}", lm)
    stage1_recipe = ROOT / "configs" / dataset / "blip-instructblip-stage1.yaml"
    stage2_recipe = ROOT / "configs" / dataset / "blip-instructblip-stage2.yaml"
    config = yaml.safe_load(stage1_recipe.read_text())
    assert config["model"]["hub_id"] == "Salesforce/instructblip-flan-t5-xl"  # the recipe names the real checkpoint
    assert config["trainer"]["lr"] == 1.0e-5 and config["trainer"]["weight_decay"] == 0.05  # InstructBLIP's

    toy = {"max_report_tokens": 32, "generation": {"max_new_tokens": 6}}
    stage1 = train("blip", stage1_recipe, manifests[data], tmp_path / "blip1",
                   toy_sets(stage1_recipe, toy, {"model.hub_id": str(standin), "data.max_val_studies": 2}))
    stage2 = train("blip", stage2_recipe, manifests[data], tmp_path / "blip2",
                   toy_sets(stage2_recipe, None, {"model.init_from": str(stage1), "data.max_val_studies": 2}))
    saved = json.loads((stage2 / "config.json").read_text())
    assert saved["backend"] == "instructblip" and saved["hub_id"] == str(standin)
    assert set(saved["lora"]) == {"vision", "lm"} and "adapters/lm/adapter_model.safetensors" in saved["files"]

    record = next(r for r in read_manifest(manifests[data]) if r.split == "test" or r.split == "val")
    # --no-gate: the real-layout fixtures' films are drawn shapes, which the chest-radiograph gate refuses
    result = CliRunner().invoke(app, ["--quiet", "report", "--model", str(stage2), "--format", "json", "--no-gate",
                                      "--indication", "cough", record.images[0].path])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert "findings" in report and report["model"] == str(standin)


def test_instructblip_stage_killed_and_resumed_is_bit_identical(tmp_path):
    """Checkpoints hold only the trained weights (HubInstructBlip.state_dict); resuming from one still
    gives exactly the weights of an uninterrupted run (dropout, random prompt variants, schedule)."""
    from crrg.training.config import load_config

    from ..training.test_resume_tasks import STEPS, kill_resume_compare
    from .conftest import write_tiny_manifest

    standin = make_tiny_instructblip(tmp_path / "instructblip-t5", "t5")
    manifest = write_tiny_manifest(tmp_path / "data", n=12)  # 8 training studies: 2 batches an epoch
    config = {**load_config(None, STEPS), "stage": "1", "model": {"backend": "instructblip", "hub_id": str(standin)},
              "lora": {"vision": {"r": 2}}, "prompt": {"train_variants": ["none", "indication", "ground_truth"]},
              "data": {"manifest": str(manifest)}}
    kill_resume_compare("blip", config, tmp_path / "runs", die_after=5)
