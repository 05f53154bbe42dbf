"""Make synthetic radiographs look and vary like real films (synthetic-to-real augmentation).

The synthetic films are clean digitally reconstructed radiographs of one CT: one detector response,
no scatter, no quantum noise, no burned-in annotations, no collimation, full resolution, one body
habitus. Real films (NIH ChestX-ray14 is 64 px here; CR, DR and portable films) differ in all of
these, and a classifier trained on the clean images learns cues that are absent or different on real
ones. Each *lever* below adds one of those real-film properties at random, so the classifier must
ignore it:

==============  ==================================================================================
lut             detector response / display LUT: gamma and a random intensity window
scatter         scatter veil (a heavily blurred copy of the image added back: lower contrast)
blur            focal-spot / detector unsharpness (a small Gaussian blur)
noise           quantum noise, stronger where fewer photons arrive, with a correlated texture
text            burned-in text and side markers ("L", "R", "AP", "PORTABLE", a date)
collimation     collimation borders (bright unexposed or dark shuttered bands with soft edges)
resolution      resolution loss: down to 32-128 px and back (the real NIH set is 64 px)
contrast        global contrast and brightness
soft_tissue     soft-tissue variation: smooth density fields and breast shadows
rotation        small rotations (positioning)
style           intensity-histogram matching to unlabelled real films (needs a :class:`StyleBank`)
==============  ==================================================================================

Images are the float32 ``(H, W)`` arrays of :func:`crrg.image.load_image` (``[0, 1]``, bright =
attenuating); every lever keeps the shape and the range. Randomness comes only from the
``numpy.random.Generator`` passed in, so a seed gives identical output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from crrg.errors import ConfigError, InputError, reject_unknown_keys

log = logging.getLogger(__name__)

LEVERS: tuple[str, ...] = ("soft_tissue", "scatter", "blur", "rotation", "collimation", "lut", "contrast",
                           "noise", "text", "resolution", "style")
STYLE_QUANTILES = 257
_TEXT_WORDS = ("L", "R", "AP", "PA", "PORTABLE", "SUPINE", "ERECT", "12/03", "2007", "A", "B")


@dataclass
class RealismConfig:
    """Probability of each lever per image (0 turns it off) and its strength."""

    lut: float = 0.8
    gamma: tuple[float, float] = (0.6, 1.7)
    window_clip: float = 0.06
    scatter: float = 0.5
    scatter_fraction: tuple[float, float] = (0.05, 0.3)
    blur: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    noise: float = 0.7
    noise_std: tuple[float, float] = (0.005, 0.04)
    text: float = 0.5
    collimation: float = 0.4
    collimation_width: float = 0.12
    resolution: float = 0.7
    resolution_px: tuple[int, int] = (32, 128)
    contrast: float = 0.8
    contrast_range: tuple[float, float] = (0.7, 1.3)
    brightness: float = 0.1
    soft_tissue: float = 0.5
    soft_tissue_amplitude: float = 0.08
    rotation: float = 0.5
    degrees: float = 6.0
    style: float = 0.0
    style_mix: tuple[float, float] = (0.5, 1.0)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RealismConfig":
        reject_unknown_keys(cls, d, "realism key(s)")
        out = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
        for lever in LEVERS:
            p = getattr(out, lever)
            if not 0.0 <= float(p) <= 1.0:
                raise ConfigError(f"realism.{lever} is a probability in [0, 1], got {p}")
        return out

    @classmethod
    def only(cls, *levers: str, **strengths: Any) -> "RealismConfig":
        """The default strengths with every lever off except ``levers`` (each then always applied)."""
        unknown = [x for x in levers if x not in LEVERS]
        if unknown:
            raise ConfigError(f"unknown realism lever(s) {unknown}; known: {list(LEVERS)}")
        cfg = cls(**strengths)
        for lever in LEVERS:
            setattr(cfg, lever, 1.0 if lever in levers else 0.0)
        return cfg


@dataclass
class StyleBank:
    """Intensity quantiles of unlabelled real films; ``style`` maps a synthetic film's histogram onto one."""

    quantiles: np.ndarray = field(default_factory=lambda: np.zeros((0, STYLE_QUANTILES), np.float32))

    @classmethod
    def from_images(cls, images: Sequence[np.ndarray]) -> "StyleBank":
        levels = np.linspace(0.0, 1.0, STYLE_QUANTILES)
        q = [np.quantile(_check(im), levels) for im in images]
        return cls(np.asarray(q, dtype=np.float32).reshape(-1, STYLE_QUANTILES))


def _check(image: np.ndarray) -> np.ndarray:
    if image.ndim != 2:
        raise InputError(f"expected a gray image of shape (H, W), got shape {tuple(image.shape)}")
    return np.asarray(image, dtype=np.float32)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(image, sigma, mode="nearest")


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, cells: int) -> np.ndarray:
    """A smooth random field in [-1, 1]: a coarse grid of random values, upsampled."""
    from scipy.ndimage import zoom

    coarse = rng.uniform(-1.0, 1.0, size=(cells, cells))
    f = zoom(coarse, (shape[0] / cells, shape[1] / cells), order=3, mode="nearest")[: shape[0], : shape[1]]
    return np.clip(f, -1.0, 1.0)


def _lut(image, rng, cfg):
    lo = rng.uniform(0.0, cfg.window_clip)
    hi = 1.0 - rng.uniform(0.0, cfg.window_clip)
    x = np.clip((image - lo) / (hi - lo), 0.0, 1.0)
    return x ** rng.uniform(*cfg.gamma)


def _scatter(image, rng, cfg):
    f = rng.uniform(*cfg.scatter_fraction)
    veil = _blur(image, max(image.shape) / 8)
    return (1.0 - f) * image + f * veil


def _blur_lever(image, rng, cfg):
    return _blur(image, rng.uniform(*cfg.blur_sigma) * max(image.shape) / 256)


def _noise(image, rng, cfg):
    std = rng.uniform(*cfg.noise_std)
    white = rng.standard_normal(image.shape).astype(np.float32)
    texture = _blur(white, rng.uniform(0.5, 1.5))
    texture /= texture.std() + 1e-6
    # Bright = attenuating = fewer photons: relative quantum noise grows there.
    return image + std * np.sqrt(0.25 + image) * texture


def _text(image, rng, cfg):
    from PIL import Image, ImageDraw, ImageFont

    h, w = image.shape
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, 4))):
        word = _TEXT_WORDS[int(rng.integers(len(_TEXT_WORDS)))]
        size = max(6, int(round(min(h, w) * rng.uniform(0.04, 0.09))))
        font = ImageFont.load_default(size=size)
        corner_x = rng.uniform(0.02, 0.2) if rng.random() < 0.5 else rng.uniform(0.7, 0.9)
        corner_y = rng.uniform(0.02, 0.2) if rng.random() < 0.5 else rng.uniform(0.8, 0.92)
        xy = (int(corner_x * w), int(corner_y * h))
        if rng.random() < 0.3:  # a lead side marker: a letter in a box
            draw.rectangle([xy[0] - 2, xy[1] - 2, xy[0] + size, xy[1] + size + 2], outline=255, width=1)
        draw.text(xy, word, fill=255, font=font)
    alpha = np.asarray(mask, dtype=np.float32) / 255.0
    value = rng.uniform(0.85, 1.0) if rng.random() < 0.8 else rng.uniform(0.0, 0.1)
    return image * (1.0 - alpha) + value * alpha


def _collimation(image, rng, cfg):
    h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = np.ones_like(image)
    soft = max(1.0, 0.01 * max(h, w))
    sides = [s for s in range(4) if rng.random() < 0.5] or [int(rng.integers(4))]
    for side in sides:
        width = rng.uniform(0.02, cfg.collimation_width)
        d = {0: yy / h, 1: (h - 1 - yy) / h, 2: xx / w, 3: (w - 1 - xx) / w}[side] - width
        inside *= 1.0 / (1.0 + np.exp(-d * max(h, w) / soft))
    value = rng.uniform(0.85, 1.0) if rng.random() < 0.5 else rng.uniform(0.0, 0.08)
    return image * inside + value * (1.0 - inside)


def _resolution(image, rng, cfg):
    import torch
    import torch.nn.functional as F

    h, w = image.shape
    side = int(rng.integers(cfg.resolution_px[0], cfg.resolution_px[1] + 1))
    if side >= max(h, w):
        return image
    x = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    small = F.interpolate(x, size=(max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w)))),
                          mode="bilinear", antialias=True, align_corners=False)
    if rng.random() < 0.5:  # 8-bit quantisation of the small file, as in a downsized PNG
        small = torch.round(small.clamp(0, 1) * 255) / 255
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()


def _contrast(image, rng, cfg):
    c = rng.uniform(*cfg.contrast_range)
    b = rng.uniform(-cfg.brightness, cfg.brightness)
    mean = float(image.mean())
    return (image - mean) * c + mean + b


def _soft_tissue(image, rng, cfg):
    h, w = image.shape
    out = image + cfg.soft_tissue_amplitude * rng.uniform(0.3, 1.0) * _smooth_field((h, w), rng, int(rng.integers(3, 6)))
    if rng.random() < 0.5:  # breast shadows: extra density over both lower zones with a curved lower edge
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cy = rng.uniform(0.6, 0.75) * h
        amp = rng.uniform(0.03, 0.1)
        for cx in (rng.uniform(0.22, 0.32) * w, rng.uniform(0.68, 0.78) * w):
            r = ((xx - cx) / (0.2 * w)) ** 2 + ((yy - cy) / (0.14 * h)) ** 2
            out = out + amp / (1.0 + np.exp(np.minimum((r - 1.0) * 8.0, 50.0)))
    return out


def _rotation(image, rng, cfg):
    from scipy.ndimage import rotate

    return rotate(image, rng.uniform(-cfg.degrees, cfg.degrees), reshape=False, order=1, mode="nearest")


class RealismAugment:
    """Apply the configured levers to one image: ``augment(image, rng) -> image`` (same shape, [0, 1])."""

    def __init__(self, config: RealismConfig | dict[str, Any] | None = None, style_bank: StyleBank | None = None):
        self.config = config if isinstance(config, RealismConfig) else RealismConfig.from_dict(config or {})
        self.style_bank = style_bank
        if self.config.style > 0 and (style_bank is None or not len(style_bank.quantiles)):
            raise ConfigError("realism.style needs a StyleBank of real images (StyleBank.from_images)")
        self._levers: dict[str, Callable] = {
            "soft_tissue": _soft_tissue, "scatter": _scatter, "blur": _blur_lever, "rotation": _rotation,
            "collimation": _collimation, "lut": _lut, "contrast": _contrast, "noise": _noise, "text": _text,
            "resolution": _resolution, "style": self._style,
        }

    def _style(self, image, rng, cfg):
        levels = np.linspace(0.0, 1.0, STYLE_QUANTILES)
        source = np.quantile(image, levels)
        target = self.style_bank.quantiles[int(rng.integers(len(self.style_bank.quantiles)))]
        matched = np.interp(image, np.maximum.accumulate(source) + levels * 1e-6, target)
        mix = rng.uniform(*cfg.style_mix)
        return (1.0 - mix) * image + mix * matched

    def active_levers(self) -> list[str]:
        return [lever for lever in LEVERS if getattr(self.config, lever) > 0]

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = _check(image).copy()
        for lever in LEVERS:  # a fixed physical order: anatomy, acquisition, processing, annotation, file
            p = float(getattr(self.config, lever))
            if p > 0 and rng.random() < p:
                x = np.clip(self._levers[lever](x, rng, self.config), 0.0, 1.0).astype(np.float32)
        return x

