"""The chest-radiograph gate: refuse what is not a usable chest radiograph before a model reports on it.

Every generator writes a confident report for anything that decodes (a photo, a page of text, noise,
a CT slice, a 32 px thumbnail). The gate stands between decoding and generation, on the one path both
faces use (:func:`load_radiograph`: ``crrg report``, batches, and the service), and refuses with a
one-line :class:`GateError` saying why (CLI exit 2, HTTP 422).

It is built from statistics one can read, checked in this order:

1. the DICOM modality: only radiographs (CR, DX, DR, RG, or none stated) - a CT or MR is refused by
   its header;
2. hard limits: the shorter side (>= 48 px: below it no model sees anatomy), the aspect ratio (a
   chest film is at most ~2.5 : 1 even when cropped), colour (a radiograph saved as RGB is gray:
   chroma ~0; a photograph is not), and a blank or saturated image (almost no contrast);
3. a score from a small CNN (:class:`GateNet`, ~94 k weights) over the 64 x 64 thumbnail, as shown and
   contrast-normalised: at that size a chest film is its intensity layout (dark lung fields either
   side of a bright mediastinum, diaphragm and abdomen below, shoulders above), which photographs,
   pages, CT / MR slices, noise and crops of a film do not have. Hand-made statistics of the same
   thumbnail (histogram, texture, symmetry, a PCA "eigen-chest" distance) were tried first and let a
   third of the unseen gray photographs through. Its weights and threshold (``gate_weights.safetensors``
   beside this module: float16 tensors, the threshold and a SHA-256 of the tensors in its metadata) are
   fitted by ``benchmarks/bench_gate.py --fit`` on a fit half of generated negatives
   (:mod:`crrg.image.gate_examples`, :mod:`crrg.image.gate_synthetic`) and real / synthetic films, the
   threshold chosen on that half (out-of-fold scores of a cross-validation, or the 0.5th percentile of
   the fit films' scores where the former would refuse real films; the file's ``note`` says which),
   and reported on the other half (benchmarks/results/gate.md). 0.9.0's 25 k-weight net let drawn
   abdomen films (a bright spine between dark gas and bright iliac wings) through: a wider net, more
   draws of the other-body-part films and hard-example mining in the fit closed that gap.
   A film refused upright is scored once more with its gray levels inverted: a chest film stored
   the other way round (a MONOCHROME1 / MONOCHROME2 mix-up) is accepted when that score is near
   certain (:data:`INVERTED_MIN_SCORE`), with a logged warning and ``GateResult.inverted``.

``check_chest_radiograph(image, info=None)`` is the gate; ``load_radiograph(path)`` decodes and gates.
Research use on other images: ``load_radiograph(..., gate=False)`` (the service's ``decode_upload(gate=False)``),
at the user's own risk; a CT or MR DICOM is refused even then.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from crrg.errors import ConfigError, ImageError
from crrg.image.loading import (
    DEFAULT_MAX_PIXELS,
    ImageInfo,
    ImageSource,
    load_image_with_info,
)

log = logging.getLogger(__name__)
# an image refused upright is accepted as an inverted chest film only at this score or above: inverted,
# a gray photo or CT slice can score like a film (up to .87 over the generated negatives of one seed),
# an inverted film scores ~1.0; fixed in advance, not fitted
INVERTED_MIN_SCORE = 0.99
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG"})
THUMB = 64
WEIGHTS_FILE = Path(__file__).with_name("gate_weights.safetensors")


class GateError(ImageError):
    """The image decodes, but it is not a chest radiograph a model can report on (HTTP 422)."""


@dataclass(frozen=True)
class GateConfig:
    """Hard limits of the gate; the CNN's weights and threshold live in ``gate_weights.safetensors``."""

    min_side: int = 48  # px: the NIH 64 px thumbnails are the smallest films we accept
    max_aspect: float = 2.5  # longer / shorter side
    max_chroma: float = 0.08  # mean (max - min) of R, G, B in [0, 1]: radiographs saved as RGB are ~0
    min_contrast: float = 0.02  # std of the thumbnail: a blank or saturated image has none
    min_texture: float = 0.04  # see texture(): about half the smallest value over the fit films


@dataclass(frozen=True)
class GateResult:
    accepted: bool
    reason: str  # empty when accepted
    score: float  # the CNN's score (probability of a chest radiograph); nan when a hard rule refused
    inverted: bool = False  # accepted only with its gray levels inverted (score is then that one)


def check_chest_radiograph(image: np.ndarray, info: ImageInfo | None = None, source: str = "image",
                           config: GateConfig = GateConfig()) -> None:
    """Raise :class:`GateError` naming ``source`` and the reason when ``image`` is not a chest radiograph."""
    result = assess(image, info, config)
    if not result.accepted:
        raise GateError(f"{source}: not accepted as a chest radiograph: {result.reason}; "
                        "give a frontal or lateral chest X-ray")


def assess(image: np.ndarray, info: ImageInfo | None = None, config: GateConfig = GateConfig()) -> GateResult:
    """The gate's decision and reason without raising (the benchmark uses this)."""
    reason = _hard_rules(image, info, config)
    if reason:
        return GateResult(False, reason, float("nan"))
    thumb = thumbnail(image)
    score = radiograph_score(thumb)
    threshold = gate_weights().threshold
    if score < threshold:
        # a chest film with its gray levels the other way round (a MONOCHROME1 / MONOCHROME2 mix-up in
        # the file, a negative exported from a viewer) is still a chest film; it is accepted, and said
        inverted = radiograph_score(1.0 - thumb)
        if inverted >= INVERTED_MIN_SCORE:
            log.warning("the image looks like a chest film with inverted gray levels (score %.2f, %.2f "
                        "inverted): check its photometric interpretation", score, inverted)
            return GateResult(True, "", inverted, inverted=True)
        return GateResult(False, f"it does not look like a chest film (score {score:.2f} < "
                          f"{threshold:.2f}: a photograph, document, CT/MR slice, noise or a crop?)", score)
    return GateResult(True, "", score)


def _hard_rules(image: np.ndarray, info: ImageInfo | None, config: GateConfig) -> str:
    modality = info.modality if info is not None else None
    if modality is not None and modality not in RADIOGRAPH_MODALITIES:
        return f"its DICOM modality is {modality}; only radiographs (CR, DX, DR) are accepted"
    if image.ndim != 2:
        return f"expected one gray (H, W) image, got shape {image.shape}"
    height, width = image.shape
    if min(height, width) < 1 or max(height, width) / min(height, width) > config.max_aspect:
        return (f"its aspect ratio {max(height, width) / max(min(height, width), 1):.1f}:1 ({width}x{height}) is beyond "
                f"{config.max_aspect}:1; a chest film is roughly square")
    if min(height, width) < config.min_side:
        return f"it is {width}x{height} px; the shorter side must be at least {config.min_side} px"
    if info is not None and info.chroma > config.max_chroma:
        return f"it is in colour (chroma {info.chroma:.2f} > {config.max_chroma}); radiographs are gray"
    thumb = thumbnail(image)
    if float(thumb.std()) < config.min_contrast:
        return f"it is blank or saturated (contrast {float(thumb.std()):.3f} < {config.min_contrast})"
    if texture(thumb) < config.min_texture:
        return (f"it has no fine structure (texture {texture(thumb):.3f} < {config.min_texture}): a gradient or a "
                "drawing, not a film")
    return ""


def texture(thumb: np.ndarray) -> float:
    """Mean absolute Laplacian of the thumbnail over its contrast: every film has grain and edges
    (smallest seen on 1,728 real and synthetic films: 0.074); gradients and drawings have almost none."""
    t = thumb.astype(np.float64)
    lap = np.abs(4 * t[1:-1, 1:-1] - t[:-2, 1:-1] - t[2:, 1:-1] - t[1:-1, :-2] - t[1:-1, 2:]).mean()
    return float(lap / (t.std() + 1e-6))


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The image without flat borders, area-averaged to THUMB x THUMB (aspect ignored: the layout is
    what matters)."""
    from crrg.image.transforms import resize

    step = max(1, min(image.shape) // (4 * THUMB))  # cheap pre-shrink of big films; resize antialiases the rest
    small = trim_flat_borders(np.ascontiguousarray(image[::step, ::step]))
    return np.clip(resize(np.ascontiguousarray(small), THUMB, THUMB)[0], 0.0, 1.0)


def trim_flat_borders(image: np.ndarray, tolerance: float = 0.02) -> np.ndarray:
    """Drop outer rows and columns that are one flat value (letterboxing, padding of figures): a film
    padded to a square is still a film. Kept whole when less than a quarter of it would remain."""
    rows = np.ptp(image, axis=1) > tolerance
    cols = np.ptp(image, axis=0) > tolerance
    if not rows.any() or not cols.any():
        return image
    r0, r1 = int(np.argmax(rows)), len(rows) - int(np.argmax(rows[::-1]))
    c0, c1 = int(np.argmax(cols)), len(cols) - int(np.argmax(cols[::-1]))
    if (r1 - r0) * (c1 - c0) < image.size / 4 or min(r1 - r0, c1 - c0) < 8:
        return image
    return image[r0:r1, c0:c1]


def _thumb_channels(thumb: np.ndarray) -> np.ndarray:
    """(2, THUMB, THUMB): the thumbnail as displayed, and contrast-normalised (layout regardless of exposure)."""
    z = (thumb - thumb.mean()) / (thumb.std() + 1e-3)
    return np.stack([thumb * 2.0 - 1.0, np.clip(z, -4, 4) / 2.0]).astype(np.float32)


class GateNet:
    """A small CNN over the 64 x 64 thumbnail (four 3 x 3 conv + pool stages, then average and max pooled
    features into one logit; ~94 k weights, ~3 ms on one core). Weights: ``gate_weights.safetensors``
    (tensors ``w0`` ... ``w9``)."""

    CHANNELS = (2, 24, 48, 64, 96)

    @staticmethod
    def shapes() -> list[tuple[int, ...]]:
        c = GateNet.CHANNELS
        out: list[tuple[int, ...]] = []
        for cin, cout in zip(c[:-1], c[1:]):
            out += [(cout, cin, 3, 3), (cout,)]
        return out + [(1, 2 * c[-1]), (1,)]

    @staticmethod
    def module():
        """The same network as a torch module (for fitting in benchmarks/bench_gate.py); its
        ``parameters()`` come in the order of :meth:`shapes`."""
        from torch import nn

        c, layers = GateNet.CHANNELS, []
        for cin, cout in zip(c[:-1], c[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = nn.Sequential(*layers)
                self.head = nn.Linear(2 * c[-1], 1)

            def forward(self, x):
                f = self.features(x)
                return self.head(__import__("torch").cat([f.mean((2, 3)), f.amax((2, 3))], 1)).squeeze(1)

        return Net()


@dataclass(frozen=True)
class GateWeights:
    tensors: tuple  # torch float32 tensors in GateNet.shapes() order
    threshold: float


def tensors_sha256(arrays) -> str:
    """SHA-256 of the float16 tensors in order: the file's metadata carries it, so a corrupt or
    mismatched weights file is caught at load time rather than scoring films at random."""
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(np.asarray(a, dtype=np.float16)).tobytes())
    return digest.hexdigest()


def save_gate_weights(arrays, threshold: float, path: Path = WEIGHTS_FILE, note: str = "") -> None:
    """Write the weights (float16) and threshold; used by ``benchmarks/bench_gate.py --fit``."""
    from safetensors.numpy import save

    tensors = {f"w{k}": np.ascontiguousarray(np.asarray(a, dtype=np.float16)) for k, a in enumerate(arrays)}
    metadata = {"threshold": repr(float(threshold)), "sha256": tensors_sha256(tensors.values()),
                "channels": ",".join(map(str, GateNet.CHANNELS)), "note": note}
    from crrg.io import atomic_write_bytes

    atomic_write_bytes(path, save(tensors, metadata=metadata))
    gate_weights.cache_clear()


@lru_cache(maxsize=1)
def gate_weights(path: Path = WEIGHTS_FILE) -> GateWeights:
    """The gate's weights and threshold, checked against GateNet's shapes and the stored SHA-256."""
    import torch
    from safetensors import SafetensorError, safe_open

    fix = "reinstall crrg (the file ships in the wheel) or refit it with `python benchmarks/bench_gate.py --fit`"
    if not path.is_file():
        raise ConfigError(f"the chest-radiograph gate's weights {path} are missing; {fix}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            arrays = [f.get_tensor(f"w{k}") for k in range(len(GateNet.shapes()))]
        threshold = float(metadata["threshold"])
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"the chest-radiograph gate's weights {path} are corrupt ({exc}); {fix}") from exc
    shapes = [tuple(a.shape) for a in arrays]
    if shapes != GateNet.shapes():
        raise ConfigError(f"the chest-radiograph gate's weights {path} have shapes {shapes}, GateNet needs "
                          f"{GateNet.shapes()}; {fix}")
    if tensors_sha256(arrays) != metadata.get("sha256"):
        raise ConfigError(f"the chest-radiograph gate's weights {path} are corrupt (SHA-256 mismatch); {fix}")
    return GateWeights(tuple(torch.from_numpy(a.astype(np.float32)) for a in arrays), threshold)


def radiograph_score(thumb: np.ndarray, weights: GateWeights | None = None) -> float:
    """Probability-like score in [0, 1] that a THUMB x THUMB thumbnail is a chest radiograph."""
    import torch
    import torch.nn.functional as F

    w = (weights or gate_weights()).tensors
    x = torch.from_numpy(np.stack([_thumb_channels(thumb), _thumb_channels(thumb[:, ::-1])]))  # and its mirror
    with torch.no_grad():
        for k in range(0, 8, 2):
            x = F.max_pool2d(F.relu(F.conv2d(x, w[k], w[k + 1], padding=1)), 2)
        logit = F.linear(torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1), w[8], w[9])
    return float(torch.sigmoid(logit).mean())


def load_radiograph(source: ImageSource, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                    gate: bool = True, max_side: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """Decode an image and pass it through the gate: the one entry of every reporting path (CLI,
    batch, service), so all refuse the same inputs with the same message."""
    image, info = load_image_with_info(source, max_pixels=max_pixels, name=name, max_side=max_side)
    if gate:
        check_chest_radiograph(image, info, source=info.name)
    else:  # research use: the statistics are skipped, but a CT or MR is never a chest film
        check_modality(info, source=info.name)
    return image, info


def check_modality(info: ImageInfo, source: str = "image") -> None:
    """Raise :class:`GateError` for a DICOM whose modality is not a radiograph (CT, MR, US, ...)."""
    if info.modality is not None and info.modality not in RADIOGRAPH_MODALITIES:
        raise GateError(f"{source}: its DICOM modality is {info.modality}; only radiographs (CR, DX, DR) "
                        "can get a chest report")
