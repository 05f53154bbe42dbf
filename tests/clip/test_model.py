from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crrg.clip.model import contrastive_loss
from crrg.errors import ConfigError
from crrg.models import create_model, load_pretrained, save_pretrained
from tests.clip.conftest import TINY_CLIP


def test_contrastive_loss_is_low_for_matched_pairs_and_high_for_shuffled():
    emb = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    matched = contrastive_loss(emb, emb, torch.tensor(50.0))
    shuffled = contrastive_loss(emb, emb.roll(1, 0), torch.tensor(50.0))
    assert matched < 0.1 < shuffled


def test_tiny_clip_loss_decreases_in_a_few_steps():
    torch.manual_seed(0)
    model = create_model(TINY_CLIP, image_encoder={"image_size": 32})
    images = torch.randn(4, 1, 32, 32)
    texts = [f"finding number {i} is seen in the {w} lung." for i, w in enumerate(["left", "right", "upper", "lower"])]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss = model(images, texts)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.clamp_logit_scale_()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])


def test_logit_scale_is_clamped():
    model = create_model(TINY_CLIP, max_logit_scale=20.0)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert math.isclose(model.scale().item(), 20.0, rel_tol=1e-5)
    model.clamp_logit_scale_()
    assert math.isclose(float(model.logit_scale), math.log(20.0), rel_tol=1e-5)


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = create_model(TINY_CLIP).eval()
    model.thresholds = {"Cardiomegaly": 0.3}
    folder = save_pretrained(model, tmp_path / "m")
    loaded = load_pretrained(folder)
    images = torch.randn(2, 1, 64, 64)
    texts = ["there is a pleural effusion.", "no cardiomegaly."]
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), loaded.encode_image(images))
        assert torch.equal(model.encode_text(texts), loaded.encode_text(texts))
    assert loaded.thresholds == {"Cardiomegaly": 0.3}
    # the saved folder is self-contained: the text encoder is rebuilt from its config, not a checkpoint
    assert "hf_config" in loaded.crrg_config["text_encoder"] and (folder / "tokenizer").is_dir()


def test_create_model_with_pretrained_folder_loads_weights(tmp_path):
    torch.manual_seed(2)
    model = create_model(TINY_CLIP).eval()
    folder = save_pretrained(model, tmp_path / "m")
    again = create_model(TINY_CLIP, pretrained=folder).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.encode_image(x), again.encode_image(x))


def test_bundled_minilm_text_encoder_loads_offline_and_separates_sentences():
    from crrg.clip.text_encoders import build_text_encoder

    tower = build_text_encoder({"pretrained": "minilm"}).eval()
    with torch.no_grad():
        emb = torch.nn.functional.normalize(tower(**tower.tokenize(["large pleural effusion", "pleural effusion on the left", "the weather is sunny"])), dim=-1)
    assert tower.feature_dim == 384
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.2  # pretrained semantics, not random weights


@pytest.mark.parametrize("name", ["resnet18", "vit_small", "mobilenet_v3_large"])
def test_image_encoders_take_one_channel(name):
    from crrg.clip.image_encoders import build_image_encoder

    options = {"num_layers": 1, "hidden_dim": 32, "mlp_dim": 64, "num_heads": 2} if name == "vit_small" else {}
    tower = build_image_encoder({"name": name, "image_size": 64, "options": options})
    out = tower(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, tower.feature_dim)


def test_gray_conv_matches_rgb_response_on_gray_input():
    from crrg.clip.image_encoders import _gray_conv

    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 1, 8, 8)
    assert torch.allclose(_gray_conv(conv)(x), conv(x.repeat(1, 3, 1, 1)), atol=1e-5)


def test_unknown_encoder_and_bad_section_are_config_errors():
    with pytest.raises(ConfigError, match="unknown image encoder"):
        create_model(TINY_CLIP, image_encoder={"name": "resnet9000"})
    with pytest.raises(ConfigError, match="report_section"):
        create_model(TINY_CLIP, report_section="history")


def test_preprocess_resizes_any_image_to_model_size():
    model = create_model(TINY_CLIP)
    batch = model.preprocess([np.random.rand(100, 80).astype(np.float32), np.zeros((30, 30), np.float32)])
    assert batch.shape == (2, 1, 64, 64)


def test_mobilenet_clip_from_the_registry_embeds_a_256_px_image():
    from crrg.models.registry import create_model

    model = create_model("clip-mobilenet-minilm").eval()
    assert model.image_size == 256 and model.image_encoder.feature_dim == 960
    # from scratch, BatchNorm statistics must keep up with a short run (torchvision's default is 0.01)
    assert {m.momentum for m in model.image_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
    emb = model.embed_images([np.random.default_rng(0).random((300, 280)).astype(np.float32)])
    assert emb.shape == (1, 256) and torch.allclose(emb.norm(dim=-1), torch.ones(1))


def test_clip_image_tower_can_start_from_another_saved_model(tmp_path):
    from crrg.clip.task import ClipModule

    donor = create_model(TINY_CLIP, image_encoder={"image_size": 32})
    save_pretrained(donor, tmp_path / "donor")
    module = ClipModule({"model": {"name": TINY_CLIP, "overrides": {"image_encoder": {"image_size": 32}},
                                   "image_encoder_from": str(tmp_path / "donor")}})
    for (k, a), b in zip(donor.image_encoder.state_dict().items(), module.model.image_encoder.state_dict().values()):
        assert torch.equal(a.float(), b.float()), k
    with pytest.raises(ConfigError, match="does not fit"):
        ClipModule({"model": {"name": TINY_CLIP, "overrides": {"image_encoder": {"name": "resnet34", "image_size": 32}},
                              "image_encoder_from": str(tmp_path / "donor")}})
