"""The region-context tower and the joint design's finding classifier: two optional nn.Module children."""

from __future__ import annotations

import json

import numpy as np
import torch

from crrg.models import create_model, load_pretrained, save_pretrained
from crrg.reporting import StudyInput
from crrg.rrg import joint

CONTEXT = {"layers": ["layer3", "layer4"], "channels": 768}


def _classifier(seed: int):
    torch.manual_seed(seed)
    return create_model("classifier-resnet18", labels=["Edema"], image_encoder={"image_size": 32}).eval()


def test_one_module_in_both_roles_is_saved_once(tmp_path):
    from tests.rrg.conftest import TINY_CONFIG, untrained_model

    model = untrained_model({**TINY_CONFIG, "region_context": dict(CONTEXT)})
    joint.attach_classifier(model, _classifier(0))
    assert model.context_encoder is model.finding_classifier
    save_pretrained(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["children"] == {"finding_classifier": "classifier", "context_encoder": "classifier"}
    assert not (tmp_path / "m" / "context_encoder").exists()
    loaded = load_pretrained(tmp_path / "m")
    assert loaded.context_encoder is loaded.finding_classifier


def test_a_separate_context_encoder_is_its_own_child_and_folder(tmp_path):
    from tests.rrg.conftest import TINY_CONFIG, untrained_model

    model = untrained_model({**TINY_CONFIG, "region_context": dict(CONTEXT)})
    joint.attach_classifier(model, _classifier(0), context=False)
    model.context_encoder = _classifier(1)
    study = StudyInput(images=[np.random.default_rng(0).random((48, 48), dtype=np.float32)], views=["PA"])
    before = model.generate_report(study)
    save_pretrained(model, tmp_path / "m")
    assert (tmp_path / "m" / "context_encoder" / "model.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:  # children are not in the main weights
        assert not any(k.startswith(("finding_classifier.", "context_encoder.")) for k in f.keys())
    loaded = load_pretrained(tmp_path / "m")
    assert loaded.context_encoder is not loaded.finding_classifier
    a = loaded.context_encoder.state_dict()
    b = model.context_encoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.generate_report(study).report == before.report


def test_the_bundled_model_uses_one_classifier_in_both_roles():
    from crrg.models.registry import DEFAULT_MODEL

    model = load_pretrained(DEFAULT_MODEL)
    assert model.finding_classifier is not None and model.context_encoder is model.finding_classifier
    assert model.decoding.joint.value == "filter" and model.decoding.consensus == 4


def test_an_old_folder_is_saved_again_with_its_decoding_beside_it(tmp_path):
    from tests.rrg.conftest import TINY_CONFIG, untrained_model

    model = untrained_model({**TINY_CONFIG, "joint": "filter", "decoding": {"consensus": 3}})
    assert model.decoding.joint.value == "filter" and model.decoding.consensus == 3
    save_pretrained(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "joint" not in config and "decoding" not in config
    assert load_pretrained(tmp_path / "m").decoding == model.decoding
