"""The real-data recipes (configs/mimic/, configs/iu_xray/) run end to end through `crrg train` at toy size.

Each recipe is read unchanged; `--set` shrinks it (tiny widths, one step, 64 px) and points its hub
weights at local stand-ins that take the same code path: torchvision's ImageNet ResNet-50 file in a
TORCH_HOME cache, a tiny GPT-2 folder for the PubMed GPT-2 hub id, a tiny report LM for ClinicalBLIP.
The data are fixtures in the datasets' real layouts (MIMIC-CXR-JPG + Chest ImaGenome, IU X-Ray Open-i +
R2Gen split) prepared with `crrg data prepare` (and `crrg data enrich-regions` for IU X-Ray).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from crrg.cli.main import app
from crrg.models.registry import load_pretrained
from crrg.records import read_manifest

from .real_layouts import SENTENCES, make_iu_xray, make_mimic_imagenome

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

TOY_TRAINER = {"max_steps": 1, "max_epochs": None, "batch_size": 2, "accumulate_grad_batches": 1, "precision": "32-true",
               "num_workers": 0, "val_check_interval": None, "limit_val_batches": 1, "checkpoint_every_n_steps": 1,
               "log_every_n_steps": 1}


def _flat(prefix: str, value) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _flat(f"{prefix}.{k}", v)]
    return [f"{prefix}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]


def toy_sets(recipe: Path, model: dict | None = None, extra: dict | None = None) -> list[str]:
    """--set arguments making a recipe toy-sized, also inside each `stages.<stage>` it lists."""
    config = yaml.safe_load(recipe.read_text())
    sets = _flat("trainer", TOY_TRAINER) + (_flat("model.overrides", model) if model else [])
    for stage in (config.get("stages") or {}):
        sets += _flat(f"stages.{stage}.trainer", TOY_TRAINER)
    for key, value in (extra or {}).items():
        sets += _flat(key, value)
    return [a for s in sets for a in ("--set", s)]


def train(task: str, recipe: Path, data: Path, out: Path, sets: list[str], stage: str | None = None) -> Path:
    args = ["--quiet", "train", task, "--config", str(recipe), "--data", str(data), "--out", str(out), *sets]
    if stage:
        args += ["--stage", stage]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{recipe.name} {stage or ''}: {result.output}\n{result.exception!r}"
    # the command prints the exported model's folder (other libraries' progress and logs share the output)
    printed = [Path(p) for p in re.findall(re.escape(str(out)) + r"[^\s'\"(),]*", result.output)]
    exported = [p for p in printed if (p / "config.json").is_file()]
    assert exported, result.output
    return exported[-1]


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict:
    """Local stand-ins for the hub weights the recipes name (the hub code paths stay as they are)."""
    import torch
    import torchvision
    from transformers import GPT2Config, GPT2LMHeadModel

    from crrg.blip.language_model import LmPretrainConfig, pretrain_report_lm
    from crrg.rrg.language import special_ids, train_tokenizer

    root = tmp_path_factory.mktemp("stand_ins")
    checkpoints = root / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), checkpoints / "resnet50-0676ba61.pth")
    texts = [s for s, _ in SENTENCES] * 4 + ["No acute cardiopulmonary process.", "Edema, Pleural Effusion."]
    tok = train_tokenizer(texts, vocab_size=300)
    ids = special_ids(tok)
    gpt2 = root / "gpt-2-pubmed-medium"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2, bos_token_id=ids["bos"],
                               eos_token_id=ids["eos"])).save_pretrained(gpt2)
    tok.save_pretrained(gpt2)
    lm = pretrain_report_lm(texts, root / "report-lm", LmPretrainConfig(vocab_size=300, n_layer=1, n_embd=32, n_head=2,
                                                                         n_positions=160, epochs=1, batch_size=8))
    return {"torch_home": root / "torch", "gpt2": gpt2, "vocab": len(tok), "lm": lm}


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("real_layouts")
    mimic, imagenome = make_mimic_imagenome(root / "mimic", n=8, size=64)
    iu = make_iu_xray(root / "iu", n=8, size=64)
    out = root / "manifests"
    for args in (["mimic-cxr", "--root", str(mimic), "--imagenome", str(imagenome), "--out", str(out / "mimic.jsonl")],
                 ["iu-xray", "--reports", str(iu / "NLMCXR_reports.tgz"), "--split", str(iu / "annotation.json"),
                  "--images", str(iu / "images"), "--metadata", str(iu / "nlmcxr_dicom_metadata.csv.gz"),
                  "--out", str(out / "iu.jsonl")]):
        result = runner.invoke(app, ["--quiet", "data", "prepare", *args])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["--quiet", "data", "enrich-regions", str(out / "iu.jsonl"), "--out", str(out / "iu_regions.jsonl")])
    assert result.exit_code == 0, result.output
    return {"mimic": out / "mimic.jsonl", "iu": out / "iu.jsonl", "iu_regions": out / "iu_regions.jsonl"}


def rrg_toy(stand_ins: dict) -> dict:
    return {"detector": {"image_size": 64, "representation_size": 32, "box_batch_size_per_image": 32,
                         "rpn_pre_nms_top_n_train": 64, "rpn_post_nms_top_n_train": 32, "rpn_pre_nms_top_n_test": 64,
                         "rpn_post_nms_top_n_test": 32},
            "feature_width": 32, "heads": {"region_hidden": 16, "finding_hidden": 16},
            "language": {"init": str(stand_ins["gpt2"]), "vocab_size": stand_ins["vocab"], "n_layer": 1, "n_embd": 32,
                         "n_head": 2, "n_positions": 64, "max_new_tokens": 6}}


@pytest.mark.parametrize("recipe, data", [("mimic/rrg-imagenome.yaml", "mimic"), ("iu_xray/rrg-pseudo-regions.yaml", "iu_regions")])
def test_region_guided_recipes_train_every_stage(recipe, data, stand_ins, manifests, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(stand_ins["torch_home"]))
    path = ROOT / "configs" / recipe
    config = yaml.safe_load(path.read_text())
    assert config["model"]["overrides"]["language"]["init"] == "healx/gpt-2-pubmed-medium"
    assert config["model"]["overrides"]["detector"]["pretrained_backbone"] is True
    records = read_manifest(manifests[data])
    assert all(r.regions for r in records if r.split == "train")
    sets = toy_sets(path, rrg_toy(stand_ins))
    init = None
    for stage in config["stages"]:  # detector, classifiers, language, joint: each from the previous export
        stage_sets = sets + (["--set", f"model.init={init}"] if init else [])
        init = train("rrg", path, manifests[data], tmp_path / stage, stage_sets, stage=stage)
    model = load_pretrained(init)
    assert model.crrg_config["detector"]["backbone"] == "resnet50_fpn"


@pytest.mark.parametrize("dataset, data", [("mimic", "mimic"), ("iu_xray", "iu")])
def test_clip_then_clinicalblip_stages(dataset, data, stand_ins, manifests, tmp_path):
    clip_recipe = ROOT / "configs" / dataset / "clip.yaml"
    clip = train("clip", clip_recipe, manifests[data], tmp_path / "clip",
                 toy_sets(clip_recipe, {"image_encoder": {"image_size": 64}, "text_encoder": {"max_length": 32}},
                          {"model.overrides.embed_dim": 32}))
    qformer = {"hidden_size": 32, "layers": 2, "heads": 2, "intermediate_size": 64, "num_query_tokens": 4,
               "cross_attention_frequency": 1, "dropout": 0.0}
    stage1_recipe = ROOT / "configs" / dataset / "blip-stage1.yaml"
    stage1 = train("blip", stage1_recipe, manifests[data], tmp_path / "blip1",
                   toy_sets(stage1_recipe, {"image_size": 64, "vision": {"checkpoint": str(clip)}, "qformer": qformer,
                                            "max_report_tokens": 32, "generation": {"max_new_tokens": 6}},
                            {"model.lm_pretrained": str(stand_ins["lm"]), "data.max_val_studies": 2}))
    stage2_recipe = ROOT / "configs" / dataset / "blip-stage2.yaml"
    stage2 = train("blip", stage2_recipe, manifests[data], tmp_path / "blip2",
                   toy_sets(stage2_recipe, None, {"model.init_from": str(stage1), "data.max_val_studies": 2}))
    assert set(load_pretrained(stage2).crrg_config["lora"]) == {"vision", "lm"}
