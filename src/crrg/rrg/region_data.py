"""Region-annotated studies for the ``rrg`` task: splits, the frontal image, region targets, corpus.

Pure functions of the records (no model): what each training example of each stage is made of.
"""

from __future__ import annotations

import logging

import torch

from crrg.errors import ConfigError, InputError
from crrg.observations import ANATOMICAL_REGIONS
from crrg.records import StudyRecord, read_manifest
from crrg.training.config import config_section

log = logging.getLogger(__name__)

_section = config_section  # the shared reader of a config section


def load_split(config: dict, key: str, default: str | None) -> list[StudyRecord]:
    data = _section(config, "data")
    manifest = data.get("manifest")
    if not manifest:
        raise ConfigError("data.manifest is missing (crrg train rrg --data M.jsonl)")
    split = data.get(key, default)
    if not split:
        return []
    records = read_manifest(manifest, split=split)
    limit = data.get("max_train") if key == "train_split" else data.get("max_val")
    return records[: int(limit)] if limit else records


def frontal_index(record: StudyRecord) -> int | None:
    """The image the region boxes belong to (regions of the first frontal image, else of image 0)."""
    if not record.images:
        return None
    indices = {r.image for r in record.regions or []}
    for i, im in enumerate(record.images):
        if im.view in ("PA", "AP") and (not indices or i in indices):
            return i
    return min(indices) if indices else 0


def with_regions(records: list[StudyRecord]) -> list[StudyRecord]:
    usable = [r for r in records if r.regions and r.images]
    if records and not usable:
        raise InputError("no study in the manifest has region annotations; the rrg generator trains on "
                         "records with 'regions' (e.g. from `crrg synth`)")
    return usable


def report_corpus(config: dict) -> list[str]:
    """Report text for tokenizer and language-model pretraining: IU X-Ray reports + the training split."""
    from crrg.text import clean_report, split_sentences

    corpus_cfg = _section(config, "corpus")
    texts: list[str] = []
    iu = corpus_cfg.get("iu_xray")
    if iu:
        from crrg.data.iu_xray import IuXrayReader

        for record in IuXrayReader(iu):
            report = clean_report(record.report, deid_replacement="")
            texts.extend(split_sentences(report))
    for record in load_split(config, "train_split", "train"):
        for region in record.regions or []:
            texts.extend(region.sentences)
        texts.extend(split_sentences(record.report))
    texts = [t.strip() for t in texts if t and t.strip()]
    limit = corpus_cfg.get("max_texts")
    return texts[: int(limit)] if limit else texts


def _load_frontal_image(record: StudyRecord, image_size: int):
    """The frontal (H, W) image resized so its long side is at most ``image_size``, the scale used, and its index."""
    from crrg.image import load_image, resize

    index = frontal_index(record)
    image = load_image(record.images[index].path)
    h, w = image.shape
    scale = image_size / max(h, w)
    if scale < 1:
        image, _ = resize(image, max(1, round(h * scale)), max(1, round(w * scale)))
    else:
        scale = 1.0
    return image, scale, index


def _load_frontal(record: StudyRecord, image_size: int) -> tuple[torch.Tensor, float, int]:
    """:func:`_load_frontal_image` as the detector's (3, H, W) tensor."""
    from crrg.rrg.detector import to_rgb_tensor

    image, scale, index = _load_frontal_image(record, image_size)
    return to_rgb_tensor(image), scale, index


def scatter_regions(features: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image features in target order -> (B, 29, F) in region order, and a (B, 29) mask of the
    regions that had a box (a region without one gets zeros and is left out of the region losses)."""
    out = features[0].new_zeros(len(features), len(ANATOMICAL_REGIONS), features[0].shape[-1])
    present = torch.zeros(len(features), len(ANATOMICAL_REGIONS))
    for i, (f, t) in enumerate(zip(features, targets)):
        out[i, t["labels"] - 1] = f
        present[i, t["labels"] - 1] = 1.0
    return out, present


def region_targets(record: StudyRecord, index: int) -> dict[str, torch.Tensor]:
    from crrg.rrg.classifiers import label_targets

    selected = torch.zeros(len(ANATOMICAL_REGIONS))
    abnormal = torch.zeros(len(ANATOMICAL_REGIONS))
    known = torch.zeros(len(ANATOMICAL_REGIONS))
    for r in record.regions or []:
        if r.image != index:
            continue
        k = ANATOMICAL_REGIONS.index(r.name)
        known[k] = 1
        selected[k] = float(bool(r.sentences))
        abnormal[k] = float(r.abnormal)
    findings, _ = label_targets(record.labels)
    return {"selected": selected, "abnormal": abnormal, "known": known, "findings": torch.tensor(findings)}


def region_sentences(record: StudyRecord, index: int) -> list[tuple[int, str]]:
    return [(ANATOMICAL_REGIONS.index(r.name), " ".join(r.sentences)) for r in record.regions or []
            if r.image == index and r.sentences]


def global_findings(record: StudyRecord) -> str:
    """The findings sentences that no region of the record carries ("" when every one has a region)."""
    from crrg.text import split_sentences

    owned = {s.strip().lower().rstrip(".") for r in record.regions or [] for s in r.sentences}
    return " ".join(s for s in split_sentences(record.findings) if s.strip().lower().rstrip(".") not in owned)
