"""The InstructBLIP hub path (``backend: instructblip``) on a tiny checkpoint saved like a hub repo."""

import numpy as np
import pytest

from crrg.errors import ConfigError
from crrg.models.registry import create_model, get_model_config
from crrg.reporting import GeneratedReport, StudyInput

from .conftest import REPORTS, random_image


@pytest.fixture(scope="module")
def tiny_instructblip(tmp_path_factory):
    import torch
    from transformers import (BlipImageProcessor, InstructBlipConfig, InstructBlipForConditionalGeneration,
                              InstructBlipProcessor)

    from crrg.blip.language_model import train_tokenizer

    out = tmp_path_factory.mktemp("instructblip")
    tokenizer = train_tokenizer(REPORTS + ["Indication: cough. Write the findings and impression."], vocab_size=300)
    qformer_tokenizer = train_tokenizer(REPORTS, vocab_size=280)
    processor = InstructBlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                                      tokenizer=tokenizer, qformer_tokenizer=qformer_tokenizer, num_query_tokens=4)
    config = InstructBlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16},
        qformer_config={"vocab_size": len(qformer_tokenizer), "hidden_size": 32, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "intermediate_size": 64, "encoder_hidden_size": 32},
        text_config={"model_type": "gpt2", "vocab_size": len(tokenizer), "n_embd": 32, "n_layer": 1, "n_head": 2,
                     "n_positions": 128, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        num_query_tokens=4, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    InstructBlipForConditionalGeneration(config).save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return out


def test_hub_checkpoint_writes_a_report_through_the_registry(tiny_instructblip):
    config = get_model_config("blip-instructblip-flan-t5-xl")
    assert config["hub_id"].startswith("Salesforce/")  # the shipped config points at the real hub model
    model = create_model({**config, "hub_id": str(tiny_instructblip), "dtype": "float32",
                          "generation": {"max_new_tokens": 6}})
    study = StudyInput(images=[random_image(0, (64, 48)), random_image(1)], views=["LATERAL", "PA"], indication="cough")
    report = model.generate_report(study)
    assert isinstance(report, GeneratedReport) and report.timings_ms["total_ms"] > 0
    assert report.model == "blip-instructblip-flan-t5-xl"
    again = model.generate_report(study)
    assert again.report == report.report  # greedy decoding is deterministic
    assert len(model.processor.tokenizer(report.report)["input_ids"]) <= 12


def test_missing_hub_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot load InstructBLIP"):
        create_model({"family": "blip", "backend": "instructblip", "hub_id": str(tmp_path / "nothing")})
