"""Image encoders for ClinicalBLIP: a radiograph batch in, a sequence of feature tokens out.

The Q-Former cross-attends to tokens, so every encoder returns ``(batch, tokens, dim)``. Radiographs
are gray: the stems take one channel instead of repeating it three times. Which encoder is used is
data (``config["vision"]["type"]``), so a CLIP image tower or a bigger ViT needs no code change; a
config can only choose among these, never name code to import.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from crrg.errors import ConfigError, ImageError

log = logging.getLogger(__name__)

# Gray radiographs in [0, 1] are centred like this before the encoder (fixed, documented, no dataset stats).
PIXEL_MEAN, PIXEL_STD = 0.5, 0.25


class ResNetTokens(nn.Module):
    """torchvision ResNet-18 with a 1-channel stem; the last feature map's cells are the tokens."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_dim = 512

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        fmap = self.body(pixels)
        return fmap.flatten(2).transpose(1, 2)


class ViTTokens(nn.Module):
    """A Hugging Face ViT built from config (1 channel); CLS and patch tokens are the tokens."""

    def __init__(self, image_size: int, spec: dict[str, Any]) -> None:
        super().__init__()
        from transformers import ViTConfig, ViTModel

        if spec.get("pretrained"):
            self.vit = ViTModel.from_pretrained(spec["pretrained"], add_pooling_layer=False)
            if self.vit.config.num_channels != 1:
                raise ConfigError(f"ViT {spec['pretrained']} takes {self.vit.config.num_channels} channels; ClinicalBLIP needs 1")
        else:
            config = ViTConfig(
                image_size=image_size, patch_size=spec.get("patch_size", 16), num_channels=1,
                hidden_size=spec.get("hidden_size", 192), num_hidden_layers=spec.get("layers", 4),
                num_attention_heads=spec.get("heads", 3), intermediate_size=spec.get("intermediate_size", 768),
            )
            self.vit = ViTModel(config, add_pooling_layer=False)
        self.out_dim = self.vit.config.hidden_size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state


class ClipTokens(nn.Module):
    """The image tower of a trained crrg CLIP model (``crrg.clip``), read out as tokens, not one vector.

    ``{"type": "clip", "checkpoint": RUN/model}`` starts from trained weights (the ClinicalBLIP recipe:
    a frozen, already image-text-aligned encoder plus LoRA); the tower's architecture is recorded as
    ``tower`` so a saved ClinicalBLIP rebuilds it without the CLIP checkpoint.
    """

    def __init__(self, image_size: int, spec: dict[str, Any]) -> None:
        super().__init__()
        from crrg.clip.image_encoders import build_image_encoder as build_clip_tower

        if spec.get("checkpoint"):
            from crrg.models.registry import load_pretrained

            clip = load_pretrained(spec["checkpoint"])
            if not hasattr(clip, "image_encoder"):
                raise ConfigError(f"{spec['checkpoint']} is not a CLIP model (it has no image_encoder)")
            self.tower_config = dict(clip.crrg_config["image_encoder"])
            tower = clip.image_encoder
        elif spec.get("tower"):
            self.tower_config = dict(spec["tower"])
            tower = build_clip_tower(self.tower_config)
        else:
            raise ConfigError("vision type 'clip' needs 'checkpoint' (a saved CLIP model) or 'tower' (its image_encoder config)")
        self.body = tower.body
        self.is_vit = hasattr(self.body, "vit")
        if self.is_vit and int(self.tower_config.get("image_size", 224)) != image_size:
            raise ConfigError(f"the CLIP ViT tower takes {self.tower_config.get('image_size', 224)} px images; set image_size to match")
        self.out_dim = int(tower.feature_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.is_vit:
            vit = self.body.vit
            x = vit._process_input(pixels)
            x = torch.cat([vit.class_token.expand(x.shape[0], -1, -1), x], dim=1)
            return vit.encoder(x)
        net = self.body  # torchvision ResNet with fc = Identity: stop before pooling
        x = net.maxpool(net.relu(net.bn1(net.conv1(pixels))))
        x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        return x.flatten(2).transpose(1, 2)


def build_image_encoder(image_size: int, spec: dict[str, Any]) -> nn.Module:
    kind = spec.get("type", "resnet18")
    if kind == "external" or "factory" in spec:
        # crrg <= 0.7 imported and called any "module:function" named here: a saved folder or hub id could
        # run code on load. Weights are safetensors precisely so that loading a model runs none.
        raise ConfigError(f"vision type {kind!r} with a 'factory' is refused: a model config may not name code to "
                          "run; use type resnet18, vit or clip, or register a model family in Python "
                          "(crrg.models.registry.register_family)")
    if kind == "resnet18":
        return ResNetTokens()
    if kind == "vit":
        return ViTTokens(image_size, spec)
    if kind == "clip":
        return ClipTokens(image_size, spec)
    raise ConfigError(f"unknown ClinicalBLIP image encoder {kind!r}; expected resnet18, vit or clip")


def default_lora_targets(spec: dict[str, Any]) -> list[str]:
    """Where vision LoRA goes when the config does not say: attention projections, or ResNet's last stage."""
    kind = spec.get("type", "resnet18")
    if kind == "vit":
        return ["q_proj", "v_proj", "query", "value"]  # transformers 5 / 4 names; absent ones are dropped
    if kind == "resnet18":
        return ["body.7.0.conv1", "body.7.0.conv2", "body.7.1.conv1", "body.7.1.conv2"]
    if kind == "clip":  # torchvision ViT MLPs (its attention bypasses module forwards), or ResNet's last stage
        return ["mlp.0", "mlp.3", "layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"]
    raise ConfigError(f"vision LoRA needs 'target_modules' for image encoder type {kind!r}")


def to_pixels(image: np.ndarray, size: int) -> torch.Tensor:
    """One gray radiograph (H, W) in [0, 1] -> normalised ``(1, size, size)`` tensor (bilinear, no crop)."""
    if not isinstance(image, np.ndarray) or image.ndim != 2:
        raise ImageError(f"expected a gray image of shape (H, W), got {getattr(image, 'shape', type(image))}")
    if image.size == 0 or not np.isfinite(image).all():
        raise ImageError("image is empty or contains NaN/inf pixels")
    lo, hi = float(image.min()), float(image.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ImageError(f"image pixels must lie in [0, 1] (got {lo:.3g}..{hi:.3g}); load it with crrg.image.load_image")
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return ((tensor[0] - PIXEL_MEAN) / PIXEL_STD).clamp(-4, 4)
