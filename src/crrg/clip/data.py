"""Datasets for CLIP and the classifier: manifests of StudyRecords and plain image folders.

Images come in through :func:`crrg.image.load_image` (float32 (H, W) in [0, 1]) and leave as
``(1, S, S)`` tensors normalised with one fixed mean/std, so training, zero-shot, classification
and retrieval all see identical pixels. Augmentations are mild on purpose: a radiograph flipped
left-right is anatomically wrong (the heart moves), so there is no flip.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from crrg.errors import ConfigError, InputError
from crrg.observations import CHEXPERT_14
from crrg.records import StudyRecord

log = logging.getLogger(__name__)

PIXEL_MEAN = 0.5
PIXEL_STD = 0.25
SECTIONS = ("findings", "impression", "both")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".bmp", ".tif", ".tiff")


def load_image(path: str | Path) -> np.ndarray:
    """The project's one image decoder (PNG/JPEG/DICOM -> float32 (H, W) in [0, 1]); errors are ImageErrors."""
    from crrg.image import load_image as _load

    return _load(path)


def image_to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """A decoded radiograph as a normalised ``(1, size, size)`` tensor (plain resize, no crop)."""
    if image.ndim != 2:
        raise InputError(f"expected a gray image of shape (H, W), got shape {tuple(image.shape)}")
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return ((x[0] - PIXEL_MEAN) / PIXEL_STD).contiguous()


def images_to_batch(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    return torch.stack([image_to_tensor(im, size) for im in images])


@dataclass
class ImageAugment:
    """Small affine jitter plus brightness/contrast changes, applied to an un-normalised tensor."""

    degrees: float = 5.0
    translate: float = 0.05
    scale: tuple[float, float] = (0.93, 1.07)
    contrast: float = 0.2
    brightness: float = 0.1

    def __call__(self, x: torch.Tensor, rng: random.Random) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        size = x.shape[-1]
        angle = rng.uniform(-self.degrees, self.degrees)
        shift = [int(round(rng.uniform(-self.translate, self.translate) * size)) for _ in range(2)]
        x = TF.affine(x, angle=angle, translate=shift, scale=rng.uniform(*self.scale), shear=[0.0, 0.0])
        c = 1.0 + rng.uniform(-self.contrast, self.contrast)
        b = rng.uniform(-self.brightness, self.brightness)
        mean = x.mean()
        return ((x - mean) * c + mean + b).clamp(0.0, 1.0)


@dataclass
class TextAugment:
    """Shuffle a report's sentences and drop some: reports list findings in no fixed order.

    ``single_sentence_probability``: the share of pairs whose text is one random sentence of the
    report (as ConVIRT samples sentences). A small finding is one sentence in six and barely moves a
    whole report's embedding; alone, it is the text, in the form of a zero-shot prompt. With a locked
    text tower and no shuffle or drop, the texts seen stay few (the reports and their sentences), so
    their features stay cached.

    ``rare_sentence_power``: a sampled sentence is drawn with weight ``count ** -power``, where count is
    how often that exact sentence occurs in the training reports (``fit``). At 0 every sentence of the
    report is equally likely; above 0 the stock negatives every report repeats ("No pneumothorax.")
    give way to the sentences that tell studies apart. It uses the report texts only, no labels.
    """

    shuffle: bool = True
    drop_probability: float = 0.2
    single_sentence_probability: float = 0.0
    rare_sentence_power: float = 0.0

    def __post_init__(self) -> None:
        self.sentence_counts: dict[str, int] = {}

    def fit(self, texts: Sequence[str]) -> "TextAugment":
        """Count the sentences of the training reports (for ``rare_sentence_power``)."""
        self.sentence_counts = dict(Counter(s for text in texts for s in split_sentences(text)))
        return self

    def _pick_sentence(self, sentences: list[str], rng: random.Random) -> str:
        if not self.rare_sentence_power:
            return rng.choice(sentences)
        weights = [max(self.sentence_counts.get(s, 1), 1) ** -self.rare_sentence_power for s in sentences]
        return rng.choices(sentences, weights=weights)[0]

    def __call__(self, text: str, rng: random.Random) -> str:
        sentences = split_sentences(text)
        if len(sentences) <= 1:
            return text
        if self.single_sentence_probability and rng.random() < self.single_sentence_probability:
            return self._pick_sentence(sentences, rng)
        if self.shuffle:
            rng.shuffle(sentences)
        kept = [s for s in sentences if rng.random() >= self.drop_probability]
        return " ".join(kept or [rng.choice(sentences)])


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def report_text(record: StudyRecord, section: str) -> str:
    """The report section CLIP learns from; falls back to the other section when the chosen one is empty."""
    if section not in SECTIONS:
        raise ConfigError(f"report section {section!r} is not one of {list(SECTIONS)}")
    if section == "findings":
        return record.findings.strip() or record.impression.strip()
    if section == "impression":
        return record.impression.strip() or record.findings.strip()
    return record.report


def primary_image(record: StudyRecord) -> str | None:
    """The frontal image by the one rule (:func:`crrg.observations.frontal_index`); a study of lateral
    films only gives its first one, since a CLIP pair still learns from a lateral film and its report."""
    from crrg.observations import frontal_index

    index = frontal_index([im.view for im in record.images], fallback=0)
    return record.images[index].path if record.images else None


def usable_pairs(records: Sequence[StudyRecord], section: str) -> list[tuple[str, str, StudyRecord]]:
    """(image path, report text, record) for the records that have both; logs how many were skipped."""
    pairs = []
    for record in records:
        path, text = primary_image(record), report_text(record, section)
        if path and text:
            pairs.append((path, text, record))
    if len(pairs) < len(records):
        log.info("skipped %d of %d studies without an image or a report", len(records) - len(pairs), len(records))
    return pairs


def sample_rng() -> random.Random:
    """The random source of one sample's augmentation, drawn from Python's global generator.

    The training engine loads every sample under a seed derived from (seed, epoch, index)
    (:class:`crrg.training.sampling.SeededDataset`), so augmentation is reproducible and a resumed run
    draws exactly what an uninterrupted one does. A dataset-held epoch counter cannot promise that: a
    run resumed from an end-of-epoch checkpoint never calls the hook that would advance it.
    """
    return random.Random(random.getrandbits(64))


class ImageTextDataset(Dataset):
    """(image, report) pairs for contrastive training; augmentation draws from :func:`sample_rng`.

    ``decode_images=False`` hands out the image path instead of pixels: with a locked image tower
    (:class:`crrg.clip.task.LockedImageFeatures`) the tower's output per image is cached, so decoding
    every image again each epoch would be wasted work.
    """

    def __init__(self, records: Sequence[StudyRecord], image_size: int, section: str = "both",
                 image_augment: ImageAugment | None = None, text_augment: TextAugment | None = None,
                 decode_images: bool = True):
        if image_augment is not None and not decode_images:
            raise ConfigError("image augmentation needs decoded images (decode_images=True)")
        self.decode_images = decode_images
        self.pairs = usable_pairs(records, section)
        if not self.pairs:
            raise InputError("no study in the manifest has both an image and a report text")
        self.image_size = image_size
        self.image_augment = image_augment
        self.text_augment = text_augment
        if text_augment is not None and text_augment.rare_sentence_power:
            text_augment.fit([text for _, text, _ in self.pairs])

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, text, _ = self.pairs[index]
        rng = sample_rng()
        x = None
        if self.decode_images:
            image = load_image(path)
            if self.image_augment is not None:
                raw = image_to_tensor(image, self.image_size) * PIXEL_STD + PIXEL_MEAN
                x = (self.image_augment(raw, rng) - PIXEL_MEAN) / PIXEL_STD
            else:
                x = image_to_tensor(image, self.image_size)
        if self.text_augment is not None:
            text = self.text_augment(text, rng)
        return {"image": x, "path": path, "text": text}


def collate_pairs(batch: list[dict[str, Any]]) -> dict[str, Any]:
    images = [b["image"] for b in batch]
    return {"image": torch.stack(images) if images[0] is not None else None,
            "path": [b["path"] for b in batch], "text": [b["text"] for b in batch]}


def label_targets(record: StudyRecord, labels: Sequence[str], uncertain: str = "positive",
                  unknown: str = "negative") -> tuple[list[float], list[float]]:
    """Target vector and mask for a record's CheXpert labels.

    For training, not mentioned (None) counts as negative, as in CheXpert practice; for evaluation
    ``unknown="ignore"`` masks it out. Uncertain (-1) is positive, negative, or masked
    (``uncertain="ignore"``).
    """
    if uncertain not in ("positive", "negative", "ignore") or unknown not in ("negative", "ignore"):
        raise ConfigError(f"uncertain={uncertain!r} / unknown={unknown!r}: expected positive|negative|ignore / negative|ignore")
    target, mask = [], []
    for name in labels:
        value = record.labels.get(name)
        if value is None and unknown == "ignore":
            target.append(0.0)
            mask.append(0.0)
            continue
        if value == -1:
            if uncertain == "ignore":
                target.append(0.0)
                mask.append(0.0)
                continue
            value = 1 if uncertain == "positive" else 0
        target.append(1.0 if value == 1 else 0.0)
        mask.append(1.0)
    return target, mask


@dataclass
class LabeledImage:
    path: str
    target: list[float]
    mask: list[float]
    id: str = ""


def labeled_from_records(records: Sequence[StudyRecord], labels: Sequence[str], uncertain: str = "positive",
                         unknown: str = "negative") -> list[LabeledImage]:
    items = []
    for record in records:
        path = primary_image(record)
        if path is None:
            continue
        target, mask = label_targets(record, labels, uncertain, unknown)
        items.append(LabeledImage(path=path, target=target, mask=mask, id=record.id))
    return items


def read_image_folder(root: str | Path) -> tuple[list[LabeledImage], list[str]]:
    """Images sorted into class sub-folders (``0_normal/``, ``1_abnormal/``) as labelled items.

    Two classes become one binary label named after the second folder (``abnormal``); more classes
    become one-hot labels named after the folders. A leading ``<digits>_`` fixes the order.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise InputError(f"image folder {root} needs at least two class sub-folders (e.g. 0_normal/, 1_abnormal/)")
    names = [re.sub(r"^\d+_", "", c.name) for c in classes]
    labels = [names[1]] if len(classes) == 2 else names
    items = []
    for k, folder in enumerate(classes):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            target = [float(k == 1)] if len(classes) == 2 else [float(k == j) for j in range(len(classes))]
            items.append(LabeledImage(path=str(path), target=target, mask=[1.0] * len(target), id=f"{folder.name}/{path.name}"))
    if not items:
        raise InputError(f"no images found under {root}")
    return items, labels


class LabeledImageDataset(Dataset):
    """Labelled images; ``decode_images=False`` gives paths without pixels, for a cached frozen tower."""

    def __init__(self, items: Sequence[LabeledImage], image_size: int, augment: ImageAugment | None = None,
                 decode_images: bool = True):
        if augment is not None and not decode_images:
            raise ConfigError("image augmentation needs decoded images (decode_images=True)")
        self.decode_images = decode_images
        self.items = list(items)
        self.image_size = image_size
        self.augment = augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        labels = {"target": torch.tensor(item.target), "mask": torch.tensor(item.mask), "path": item.path}
        if not self.decode_images:
            return labels
        image = load_image(item.path)
        if self.augment is not None:
            rng = sample_rng()
            raw = image_to_tensor(image, self.image_size) * PIXEL_STD + PIXEL_MEAN
            x = (self.augment(raw, rng) - PIXEL_MEAN) / PIXEL_STD
        else:
            x = image_to_tensor(image, self.image_size)
        return {"image": x, **labels}


def default_labels() -> list[str]:
    return list(CHEXPERT_14)
