"""`crrg train blip`: stage 1 then stage 2 through the training engine on a tiny manifest."""

import json

import numpy as np
import pytest

from crrg.errors import ConfigError
from crrg.models.registry import load_pretrained
from crrg.reporting import StudyInput

from .conftest import write_tiny_manifest


@pytest.fixture()
def manifest(tmp_path):
    return write_tiny_manifest(tmp_path, n=6)


def _config(tiny_config, manifest, stage, **model):
    overrides = {k: v for k, v in tiny_config.items() if k not in ("family", "lora", "name", "lm")}
    return {
        "stage": stage,
        "model": {"name": "blip-vit-small-gpt2", "overrides": overrides, "lm_pretrained": tiny_config["lm"]["pretrained"], **model},
        "lora": {"vision": {"r": 2}} if stage == "1" else {"lm": {"r": 2}},
        "data": {"manifest": str(manifest)},
        "trainer": {"max_steps": 2, "batch_size": 2, "lr": 1e-3, "checkpoint_every_n_steps": 1, "log_every_n_steps": 1},
    }


def test_stage1_then_stage2_export_loadable_report_writers(tiny_config, manifest, tmp_path):
    from crrg.training.engine import train

    stage1 = train("blip", _config(tiny_config, manifest, "1"), tmp_path / "run1", progress_bar=False)
    first = load_pretrained(stage1)
    assert first.crrg_config["lora"] == {"vision": {"r": 2}} and (stage1 / "adapters" / "vision").is_dir()
    assert (stage1 / "tokenizer").is_dir()

    stage2 = train("blip", _config(tiny_config, manifest, "2", init_from=str(stage1)), tmp_path / "run2", progress_bar=False)
    second = load_pretrained(stage2)
    assert set(second.crrg_config["lora"]) == {"vision", "lm"}
    assert (stage2 / "adapters" / "lm" / "adapter_model.safetensors").is_file()
    # stage 2 did not touch the image encoder: its weights equal stage 1's
    v1, v2 = first.vision.state_dict(), second.vision.state_dict()
    assert all(np.array_equal(v1[k].numpy(), v2[k].numpy()) for k in v1)
    metrics = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert metrics["global_step"] == 2
    report = second.generate_report(StudyInput(images=[np.zeros((30, 30), np.float32)], views=["PA"]), prompt_variant="none")
    assert isinstance(report.findings, str)


def test_unknown_stage_and_settings_are_config_errors(tiny_config, manifest, tmp_path):
    from crrg.training.engine import train

    with pytest.raises(ConfigError, match="no stage '3'"):
        train("blip", _config(tiny_config, manifest, "3"), tmp_path / "a", progress_bar=False)
    bad = _config(tiny_config, manifest, "1")
    bad["model"]["typo"] = 1
    with pytest.raises(ConfigError, match="unknown model setting"):
        train("blip", bad, tmp_path / "b", progress_bar=False)
    bad = _config(tiny_config, manifest, "1")
    bad["lora"] = {}
    with pytest.raises(ConfigError, match="vision_lora but model.vision has no LoRA"):
        train("blip", bad, tmp_path / "c", progress_bar=False)


def test_the_report_lm_uses_crrgs_one_tokenizer_trainer_with_case_kept(tiny_lm):
    from crrg.blip.language_model import train_tokenizer
    from crrg.text.tokenizer import BOS, EOS, PAD
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_lm))
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) == (PAD, BOS, EOS)
    assert tokenizer.decode(tokenizer("The heart", add_special_tokens=False)["input_ids"]).strip() == "The heart"
    again = train_tokenizer(["The heart is normal."] * 3, vocab_size=270)
    assert again("x", add_special_tokens=False)["input_ids"] and again.pad_token == PAD


def test_report_lm_is_an_engine_task(tmp_path):
    from crrg.training.engine import train
    from crrg.training.config import load_config

    from .conftest import REPORTS

    config = {**load_config(None, ["trainer.max_steps=2", "trainer.batch_size=4"]),
              "lm": {"vocab_size": 300, "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64, "max_tokens": 48},
              "data": {"texts": REPORTS}}
    out = train("report-lm", config, tmp_path / "run", progress_bar=False)
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["global_step"] == 2
    with pytest.raises(ConfigError, match="unknown lm setting"):
        train("report-lm", {**config, "lm": {"layers": 2}}, tmp_path / "bad", progress_bar=False)
