"""Every named configuration of the registry, built at tiny size, runs one forward pass (offline: the
hub language models are replaced by a local one-layer GPT-2, pretrained backbones switched off)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crrg.errors import ConfigError
from crrg.models.registry import create_model, get_model_config, list_models
from crrg.reporting import StudyInput

TINY_LANGUAGE = {"vocab_size": 400, "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 48, "prefix_length": 2,
                 "max_new_tokens": 8, "init": None}
TINY_DETECTOR = {"image_size": 64, "pretrained_backbone": False, "anchor_sizes": [8, 16, 24, 32, 64],
                 "rpn_pre_nms_top_n_test": 60, "rpn_post_nms_top_n_test": 40, "representation_size": 64}


def _tiny(name: str, lm_folder) -> dict:
    family = get_model_config(name)["family"]
    if family == "rrg":
        return {"detector": TINY_DETECTOR, "language": TINY_LANGUAGE, "feature_width": 32,
                "heads": {"region_hidden": 16, "finding_hidden": 16}}
    if family in ("clip", "classifier"):
        return {"image_encoder": {"image_size": 64}}
    if get_model_config(name).get("backend") == "instructblip":
        return {}
    vision = get_model_config(name)["vision"]
    if vision.get("type") == "vit":
        vision = {**vision, "hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64}
    return {"image_size": 32, "vision": vision, "lm": {"pretrained": str(lm_folder)},
            "qformer": {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64, "num_query_tokens": 2},
            "generation": {"max_new_tokens": 4, "num_beams": 1}}


def _image(size: int) -> np.ndarray:
    return np.random.default_rng(0).random((size, size), dtype=np.float32)


@pytest.mark.parametrize("name", list_models())
def test_every_registry_config_builds_tiny_and_runs_forward(name, tiny_lm_folder, tmp_path):
    config = get_model_config(name)
    torch.manual_seed(0)
    if config.get("backend") == "instructblip":  # needs the hub: a local stand-in that is absent
        with pytest.raises(ConfigError, match="cannot load InstructBLIP checkpoint"):
            create_model(name, hub_id=str(tmp_path / "no-such-checkpoint"))
        return
    model = create_model(name, **_tiny(name, tiny_lm_folder)).eval()
    family = config["family"]
    with torch.no_grad():
        if family == "rrg":
            det, feats, probs = model.analyse(_image(64))
            assert feats.shape == (29, 32) and probs["findings"].shape == (14,)
        elif family == "clip":
            out = model(model.preprocess([_image(64), _image(64)]), ["no effusion.", "cardiomegaly."])
            assert torch.isfinite(out["loss"])
        elif family == "classifier":
            assert model.probabilities([_image(64)]).shape == (1, len(model.labels))
        else:
            report = model.generate_report(StudyInput(images=[_image(32)], views=["PA"]))
            assert isinstance(report.report, str)
