"""Image towers for CLIP and the classifier, chosen by name from a small registry.

Radiographs are gray, so every tower takes one channel. When ImageNet weights are requested the
first convolution's RGB kernels are summed into one channel, which keeps the pretrained filters'
response to a gray image (R = G = B) exactly the same.

A tower maps ``(B, 1, H, W)`` to ``(B, feature_dim)``; ``feature_dim`` is recorded on the module so
projection heads can be sized without running an image through it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from crrg.errors import ConfigError, reject_unknown_keys

log = logging.getLogger(__name__)


@dataclass
class ImageEncoderConfig:
    name: str = "resnet18"
    # torchvision weights enum name, e.g. "IMAGENET1K_V1"; needs internet (or a filled torch hub cache).
    weights: str | None = None
    image_size: int = 224
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImageEncoderConfig":
        reject_unknown_keys(cls, d, "image_encoder key(s)")
        return cls(**d)


class ImageTower(nn.Module):
    """A backbone without its classification layer, returning one pooled feature vector per image."""

    def __init__(self, body: nn.Module, feature_dim: int):
        super().__init__()
        self.body = body
        self.feature_dim = feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


def _gray_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A one-channel copy of ``conv`` whose kernel is the sum of the RGB kernels."""
    gray = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
    with torch.no_grad():
        gray.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            gray.bias.copy_(conv.bias)
    return gray


def _resnet(arch: str) -> Callable[[ImageEncoderConfig], ImageTower]:
    def build(cfg: ImageEncoderConfig) -> ImageTower:
        import torchvision

        constructor = getattr(torchvision.models, arch)
        model = constructor(weights=cfg.weights)
        model.conv1 = _gray_conv(model.conv1)
        feature_dim = model.fc.in_features
        model.fc = nn.Identity()
        return ImageTower(model, feature_dim)

    return build


def _mobilenet_v3_large(cfg: ImageEncoderConfig) -> ImageTower:
    """MobileNetV3-Large (the rrg detector's backbone family): about half a ResNet-18's compute at twice
    the resolution, which on a CPU buys the pixels small findings need (a pneumothorax rim, a widened
    mediastinum) for the same training time."""
    import torchvision

    model = torchvision.models.mobilenet_v3_large(weights=cfg.weights)
    if not cfg.weights:
        # torchvision's BatchNorm momentum here is 0.01 (tuned for long ImageNet runs): after a few
        # hundred steps from scratch the running statistics still lag the weights and eval-mode
        # features are wrong (measured: zero-shot val macro AUC 0.61, 0.72 after re-estimating them).
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
    stem = model.features[0]
    stem[0] = _gray_conv(stem[0])
    feature_dim = model.classifier[0].in_features
    model.classifier = nn.Identity()
    return ImageTower(model, feature_dim)


class _ViTBody(nn.Module):
    """torchvision's VisionTransformer with a one-channel patch embedding and no head."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.vit._process_input(images)
        token = self.vit.class_token.expand(x.shape[0], -1, -1)
        x = self.vit.encoder(torch.cat([token, x], dim=1))
        return x[:, 0]


def _vit_small(cfg: ImageEncoderConfig) -> ImageTower:
    """A small ViT (ViT-Tiny sized by default) trained from scratch; sizes can be overridden in options."""
    from torchvision.models.vision_transformer import VisionTransformer

    if cfg.weights:
        raise ConfigError("vit_small has no pretrained weights; leave image_encoder.weights empty")
    opts = {"patch_size": 16, "num_layers": 6, "num_heads": 6, "hidden_dim": 192, "mlp_dim": 768}
    opts.update(cfg.options)
    if cfg.image_size % opts["patch_size"]:
        raise ConfigError(f"image_size {cfg.image_size} is not a multiple of the ViT patch size {opts['patch_size']}")
    vit = VisionTransformer(image_size=cfg.image_size, num_classes=1, **opts)
    vit.conv_proj = nn.Conv2d(1, opts["hidden_dim"], kernel_size=opts["patch_size"], stride=opts["patch_size"])
    vit.heads = nn.Identity()
    return ImageTower(_ViTBody(vit), opts["hidden_dim"])


IMAGE_ENCODERS: dict[str, Callable[[ImageEncoderConfig], ImageTower]] = {
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
    "mobilenet_v3_large": _mobilenet_v3_large,
    "vit_small": _vit_small,
}


def build_image_encoder(cfg: ImageEncoderConfig | dict[str, Any]) -> ImageTower:
    if isinstance(cfg, dict):
        cfg = ImageEncoderConfig.from_dict(cfg)
    if cfg.name not in IMAGE_ENCODERS:
        raise ConfigError(f"unknown image encoder {cfg.name!r}; known: {sorted(IMAGE_ENCODERS)}")
    try:
        return IMAGE_ENCODERS[cfg.name](cfg)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:  # download failed (offline) or bad weights name
        if cfg.weights:
            raise ConfigError(f"could not load {cfg.weights} weights for {cfg.name}: {exc}") from None
        raise
