"""Resize, letterbox and crop transforms that keep boxes consistent with the pixels.

Each transform returns the new image and the :class:`Affine` that maps coordinates of the input to
coordinates of the output, so region boxes (``[x1, y1, x2, y2]`` in pixels, as in
:class:`crrg.records.Region`) can be carried forward to the model's input, and the model's output
boxes carried back to the original image with :meth:`Affine.inverse_boxes`. Coordinates are
continuous pixel-edge coordinates: ``[0, 0, W, H]`` is the whole image.

Images are the float32 ``(H, W)`` arrays of :func:`crrg.image.load_image`; resampling uses PIL's
float ("F") mode, which antialiases when shrinking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from crrg.errors import InputError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Affine:
    """``x' = x * sx + dx``, ``y' = y * sy + dy``: an axis-aligned scale and shift of pixel coordinates."""

    sx: float = 1.0
    sy: float = 1.0
    dx: float = 0.0
    dy: float = 0.0

    def then(self, other: "Affine") -> "Affine":
        """This transform followed by ``other``."""
        return Affine(self.sx * other.sx, self.sy * other.sy, self.dx * other.sx + other.dx, self.dy * other.sy + other.dy)

    def inverse(self) -> "Affine":
        return Affine(1.0 / self.sx, 1.0 / self.sy, -self.dx / self.sx, -self.dy / self.sy)

    def boxes(self, boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Map ``(N, 4)`` boxes ``[x1, y1, x2, y2]`` forward (input pixels -> output pixels)."""
        b = _as_boxes(boxes)
        scale = np.array([self.sx, self.sy, self.sx, self.sy])
        shift = np.array([self.dx, self.dy, self.dx, self.dy])
        return b * scale + shift

    def inverse_boxes(self, boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Map ``(N, 4)`` boxes back (output pixels -> input pixels), e.g. detector output to the original image."""
        return self.inverse().boxes(boxes)

    def points(self, xy: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return p * np.array([self.sx, self.sy]) + np.array([self.dx, self.dy])


def _as_boxes(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return b.reshape(0, 4)
    if b.ndim == 1:
        b = b.reshape(1, -1)
    if b.ndim != 2 or b.shape[1] != 4:
        raise InputError(f"boxes must have shape (N, 4) as [x1, y1, x2, y2]; got {tuple(np.shape(boxes))}")
    return b


def clip_boxes(boxes: np.ndarray | Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Clip boxes to ``[0, W] x [0, H]`` (boxes partly outside a crop)."""
    b = _as_boxes(boxes).copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
    return b


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 2:
        raise InputError(f"expected a 2-D gray image (H, W); got {getattr(image, 'shape', type(image).__name__)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError("the image has no pixels")
    return image.astype(np.float32, copy=False)


def _resample(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    if image.shape == (height, width):
        return image.copy()
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    return np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def resize(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Affine]:
    """Resize to exactly ``(height, width)`` (aspect not kept)."""
    image = _check_image(image)
    if height < 1 or width < 1:
        raise InputError(f"resize target must be at least 1x1; got {width}x{height}")
    h, w = image.shape
    return _resample(image, height, width), Affine(width / w, height / h)


def letterbox(image: np.ndarray, size: int, fill: float = 0.0) -> tuple[np.ndarray, Affine]:
    """Resize the longer side to ``size`` keeping the aspect ratio, then pad to ``size x size``, centred.

    Padding is black (``fill=0``) like the collimated border of a film, so it reads as "no anatomy".
    """
    image = _check_image(image)
    if size < 1:
        raise InputError(f"letterbox size must be positive; got {size}")
    h, w = image.shape
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = _resample(image, new_h, new_w)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out = np.full((size, size), fill, dtype=np.float32)
    out[top:top + new_h, left:left + new_w] = resized
    return out, Affine(new_w / w, new_h / h, float(left), float(top))


def crop(image: np.ndarray, box: Sequence[float]) -> tuple[np.ndarray, Affine]:
    """Cut out ``[x1, y1, x2, y2]`` (integer pixel edges, clipped to the image)."""
    image = _check_image(image)
    h, w = image.shape
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, x2 = max(0, min(x1, w)), max(0, min(x2, w))
    y1, y2 = max(0, min(y1, h)), max(0, min(y2, h))
    if x2 <= x1 or y2 <= y1:
        raise InputError(f"crop box {list(box)} does not overlap the {w}x{h} image")
    return image[y1:y2, x1:x2].copy(), Affine(1.0, 1.0, -float(x1), -float(y1))


def center_crop(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Affine]:
    image = _check_image(image)
    h, w = image.shape
    top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
    return crop(image, (left, top, left + width, top + height))


def to_tensor(image: np.ndarray, mean: float | None = None, std: float | None = None) -> "torch.Tensor":
    """A ``(1, H, W)`` float32 tensor for a model, optionally standardised as ``(x - mean) / std``.

    Images are in ``[0, 1]``; ``mean=0.5, std=0.5`` gives ``[-1, 1]``, ImageNet-pretrained backbones
    fed a gray channel usually take ``mean=0.449, std=0.226`` (the mean of ImageNet's RGB statistics).
    Models record their own choice in their config so that training and inference agree.
    """
    import torch

    image = _check_image(image)
    tensor = torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0)
    if mean is not None or std is not None:
        mean = 0.0 if mean is None else float(mean)
        std = 1.0 if std is None else float(std)
        if std <= 0:
            raise InputError(f"std must be positive; got {std}")
        tensor = (tensor - mean) / std
    return tensor


@dataclass
class Preprocess:
    """The usual model input: letterbox to a square, then a standardised tensor; keeps the geometry."""

    size: int = 512
    mean: float | None = None
    std: float | None = None

    def __call__(self, image: np.ndarray) -> tuple["torch.Tensor", Affine]:
        square, geometry = letterbox(image, self.size)
        return to_tensor(square, self.mean, self.std), geometry
