"""`crrg train blip` from a hub InstructBLIP (``model.backend: instructblip``) on tiny local stand-ins.

The stand-ins are saved like hub repositories and loaded by ``from_pretrained``, as the real
checkpoints are; the T5 one stands for the flan-t5 InstructBLIPs, the OPT one for the decoder-only ones.
"""

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from crrg.blip import lora as lora_lib
from crrg.errors import ConfigError
from crrg.models.registry import create_model, load_pretrained
from crrg.reporting import StudyInput

from .conftest import write_tiny_manifest
from .standins import count_generated_tokens, make_tiny_instructblip


@pytest.fixture(scope="module", params=["t5", "opt"])
def standin(request, tmp_path_factory):
    return make_tiny_instructblip(tmp_path_factory.mktemp(f"instructblip_{request.param}"), request.param)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_tiny_manifest(tmp_path_factory.mktemp("hub_manifest"), n=6)


def _config(hub_id, manifest, stage, **model):
    return {
        "stage": stage,
        "model": {"backend": "instructblip", "hub_id": hub_id and str(hub_id), "overrides": {"generation": {"max_new_tokens": 6}},
                  **model},
        "lora": {"vision": {"r": 2, "dropout": 0.0}} if stage == "1" else {"lm": {"r": 2, "dropout": 0.0}},
        "prompt": {"train_variants": ["indication", "ground_truth"]},
        "data": {"manifest": str(manifest)},
        "trainer": {"max_steps": 2, "batch_size": 2, "lr": 1e-3, "checkpoint_every_n_steps": 1, "log_every_n_steps": 1},
    }


def _weights(model, group):
    return {k: v.clone() for k, v in model.named_parameters() if model.parameter_group(k) == group}


@pytest.mark.slow  # 4-7 s per language model here
def test_stage1_then_stage2_train_the_bridge_and_adapters_and_export_report_writers(standin, manifest, tmp_path):
    from crrg.generation import load_generator
    from crrg.training.engine import train

    base = create_model({"family": "blip", "backend": "instructblip", "hub_id": str(standin)})
    config = _config(standin, manifest, "1")
    config["trainer"]["monitor"] = "val_loss"  # the best checkpoint is exported too: it loads through the module
    stage1 = train("blip", config, tmp_path / "run1", progress_bar=False)
    first = load_pretrained(stage1)
    assert (tmp_path / "run1" / "best-model" / "model.safetensors").is_file()
    assert (stage1 / "adapters" / "vision" / "adapter_model.safetensors").is_file()
    assert first.crrg_config["backend"] == "instructblip" and first.crrg_config["hub_id"] == str(standin)
    # stage 1 moved the Q-Former bridge; the language model is the hub's, untouched
    assert any(not torch.equal(v, _weights(first, "qformer")[k]) for k, v in _weights(base, "qformer").items())
    assert all(torch.equal(v, _weights(first, "lm")[k]) for k, v in _weights(base, "lm").items())
    # the folder holds the bridge and the adapter, not the hub base
    saved = json.loads((stage1 / "config.json").read_text())
    from safetensors.torch import load_file

    keys = load_file(str(stage1 / "model.safetensors"))
    assert keys and all(first.parameter_group(k) in ("qformer", "vision_lora") for k in keys), saved["files"]
    from crrg.training.checkpoint import load_checkpoint_file  # checkpoints too: no copy of the hub base in each

    checkpoint = load_checkpoint_file(tmp_path / "run1" / "checkpoints" / "last.ckpt")["state_dict"]
    assert {k.removeprefix("model.") for k in checkpoint} == set(keys)

    # stage 2 holds the hub base in bfloat16 (trainer.precision stays 32-true: the model autocasts itself)
    stage2 = train("blip", _config(None, manifest, "2", init_from=str(stage1), dtype="bfloat16"), tmp_path / "run2",
                   progress_bar=False)
    second = load_pretrained(stage2)
    assert second.crrg_config["dtype"] == "bfloat16" and second.model.language_model.dtype == torch.bfloat16
    assert set(second.crrg_config["lora"]) == {"vision", "lm"}
    assert (stage2 / "adapters" / "lm" / "adapter_config.json").is_file()
    # stage 2 left the vision adapter as stage 1 trained it (held in float32 in both)
    assert all(torch.equal(v, _weights(second, "vision_lora")[k]) for k, v in _weights(first, "vision_lora").items())
    assert json.loads((tmp_path / "run2" / "metrics.json").read_text())["global_step"] == 2

    engine = load_generator(stage2, device="cpu")
    study = StudyInput(images=[np.random.default_rng(0).random((40, 40), dtype=np.float32)], views=["PA"], indication="cough")
    written = count_generated_tokens(engine.model)
    report = engine.generate(study)
    assert isinstance(report.findings, str) and report.timings_ms["total_ms"] > 0
    assert report.report == engine.generate(study).report  # greedy: the same report twice
    assert 0 < written[0] <= 6 and "Write the findings" not in report.report  # the prompt is not echoed
    half = load_generator(stage2, device="cpu", dtype="float16")  # the whole model cast, bridge included
    assert half.model.base_dtype == torch.float16 and isinstance(half.generate(study).report, str)


def test_stage_trainable_counts_follow_the_lora_parts(standin):
    from crrg.blip.task import build_blip

    config = _config(standin, "unused.jsonl", "1")
    stage1 = lora_lib.parameter_counts(build_blip(config))
    assert stage1["lm"]["trainable"] == 0 and "lm_lora" not in stage1
    assert stage1["vision"]["trainable"] == 0 and stage1["vision_lora"]["trainable"] > 0
    assert stage1["qformer"]["trainable"] == stage1["qformer"]["total"] > 0
    stage2 = lora_lib.parameter_counts(build_blip({**config, "stage": "2", "lora": {"lm": {"r": 2}}}))
    assert stage2["lm_lora"]["trainable"] > 0 and stage2["lm"]["trainable"] == 0


def test_lm_lora_targets_depend_on_the_language_model(standin):
    model = create_model({"family": "blip", "backend": "instructblip", "hub_id": str(standin), "lora": {"lm": {"r": 2}}})
    wrapped = {n.rsplit(".", 1)[0] for n, _ in model.named_modules() if n.endswith("lora_A")}
    kind = model.model.config.text_config.model_type
    assert wrapped and {n.rsplit(".", 1)[-1] for n in wrapped} == {"t5": {"q", "v"}, "opt": {"q_proj", "v_proj"}}[kind]


def test_collate_masks_the_instruction_for_decoder_only_lms(standin):
    model = create_model({"family": "blip", "backend": "instructblip", "hub_id": str(standin)})
    sample = model.prepare_sample([np.zeros((40, 30), np.float32), np.ones((40, 30), np.float32)], ["LATERAL", "PA"],
                                  "Indication: cough. Write the findings and impression.", "The lungs are clear.")
    assert torch.allclose(sample["pixels"], model.prepare_sample([np.ones((40, 30), np.float32)], ["PA"], "")["pixels"])
    batch = model.collate([sample])
    tok = model.processor.tokenizer
    report = [t for t in batch.labels[0].tolist() if t != -100]
    assert tok.decode(report, skip_special_tokens=True).strip() == "The lungs are clear."
    image_tokens = int((batch.input_ids == model.model.config.image_token_id).sum())
    assert image_tokens == model.model.config.num_query_tokens
    if model.decoder_only:  # instruction + report in the input, loss only on the report
        assert batch.input_ids.shape == batch.labels.shape and (batch.labels[0, :image_tokens] == -100).all()
    else:  # T5: the instruction goes to the encoder, the report is the decoder's target
        assert report[-1] == tok.eos_token_id and (batch.labels != -100).sum() == len(report)


def test_bad_instructblip_configs_are_config_errors(standin, manifest, tmp_path):
    from crrg.blip.task import BlipTask
    from crrg.training.engine import train

    with pytest.raises(ConfigError, match="needs model.hub_id"):
        BlipTask().validate(_config(None, manifest, "1"))
    BlipTask().validate(_config(None, manifest, "2"))  # a stage-2 recipe names init_from on the command line ...
    with pytest.raises(ConfigError, match="needs model.hub_id"):  # ... and cannot train without it
        train("blip", _config(None, manifest, "2"), tmp_path / "c", progress_bar=False)
    with pytest.raises(ConfigError, match="is not one of"):
        BlipTask().validate({**_config(standin, manifest, "1"), "model": {"backend": "instructblip2"}})
    bad = _config(standin, manifest, "1")
    bad["loss"] = {"itc_weight": 0.5}
    with pytest.raises(ConfigError, match="itc_weight"):
        train("blip", bad, tmp_path / "a", progress_bar=False)
    bad = _config(standin, manifest, "1")
    bad["trainable"] = ["qformer", "lm"]
    with pytest.raises(ConfigError, match="drop 'vision' / 'lm'"):
        train("blip", bad, tmp_path / "b", progress_bar=False)
    model = create_model({"family": "blip", "backend": "instructblip", "hub_id": str(standin)})
    model.model.config.text_config.model_type = "bloom"  # an LM whose projection names crrg does not know
    with pytest.raises(ConfigError, match="not 'bloom'; name them in lora.lm.target_modules"):
        model.add_adapters("lm", {"r": 2})


def test_a_bfloat16_base_trains_float32_weights_with_or_without_mixed_precision(standin):
    from crrg.blip.task import build_blip

    model = build_blip(_config(standin, "unused.jsonl", "1", dtype="bfloat16"))
    assert all((p.dtype == torch.float32) == p.requires_grad for p in model.parameters())
    sample = model.prepare_sample([np.ones((40, 30), np.float32)], ["PA"], "Indication: cough.", "The lungs are clear.")
    for outer in (torch.autocast("cpu", dtype=torch.bfloat16), contextlib.nullcontext()):  # bf16-mixed, 32-true
        with outer:
            loss = model(model.collate([sample, sample]))
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_only_the_frontal_film_is_decoded_for_training(standin, manifest, monkeypatch):
    import crrg.image
    from crrg.blip.data import BlipStudyDataset
    from crrg.blip.prompts import PromptConfig
    from crrg.records import read_manifest

    decoded = []
    load = crrg.image.load_image
    monkeypatch.setattr(crrg.image, "load_image", lambda path: decoded.append(Path(path).name) or load(path))
    model = create_model({"family": "blip", "backend": "instructblip", "hub_id": str(standin)})
    records = [r for r in read_manifest(manifest) if r.split == "train"]
    assert all(len(r.images) == 2 for r in records)  # PA + lateral: InstructBLIP reads one of them
    data = BlipStudyDataset(records, model.prepare_sample, PromptConfig(), ["indication"], images_read=model.images_read)
    sample = data[0]
    assert decoded == [f"{records[0].id}_PA.png"] and sample["views"] == ["PA"]
