from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crrg.clip.zeroshot import ZeroShotClassifier, load_prompts
from crrg.errors import ConfigError
from crrg.models import create_model
from crrg.observations import CHEXPERT_14
from tests.clip.conftest import TINY_CLIP


def test_packaged_prompts_cover_chexpert_14():
    prompts = load_prompts()
    assert list(prompts) == list(CHEXPERT_14)
    assert all(p["positive"] and p["negative"] for p in prompts.values())


def test_zero_shot_with_custom_prompt_file_is_softmax_over_ensembled_prompts(tmp_path):
    torch.manual_seed(0)
    model = create_model(TINY_CLIP).eval()
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"observations": {
        "Effusion": {"positive": ["pleural effusion", "there is fluid"], "negative": "no pleural effusion"},
        "Big heart": {"positive": ["cardiomegaly"], "negative": ["normal heart size"]},
    }}))
    zs = ZeroShotClassifier.from_prompt_file(model, path)
    images = [np.random.rand(64, 64).astype(np.float32) for _ in range(3)]
    probs = zs.probabilities(images)
    assert zs.observations == ["Effusion", "Big heart"] and probs.shape == (3, 2)
    with torch.no_grad():
        img = model.embed_images(images)
        pos = torch.nn.functional.normalize(model.embed_texts(["pleural effusion", "there is fluid"]).mean(0), dim=-1)
        neg = model.embed_texts(["no pleural effusion"])[0]
        logits = model.scale() * torch.stack([img @ pos, img @ neg], dim=1)
        expected = logits.softmax(dim=1)[:, 0].numpy()
    np.testing.assert_allclose(probs[:, 0], expected, rtol=1e-4, atol=1e-6)
    assert zs.thresholds() == {"Effusion": 0.5, "Big heart": 0.5}


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"),
    ('{"observations": {}}', "needs an 'observations'"),
    ('{"observations": {"X": {"positive": ["x"]}}}', "negative prompts"),
])
def test_bad_prompt_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_prompts(path)
