"""The data module of the ``rrg`` task: per stage, the datasets and how batches are put together.

``detector``: frontal images with region boxes; ``pretrain``: report text; the later stages: cached
region features (:mod:`crrg.rrg.feature_cache`) computed with the model the training module already
built (the task hands it over), never a second copy of it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from crrg.records import StudyRecord
from crrg.rrg.feature_cache import feature_cache_dir, classifier_conditions, compute_features
from crrg.rrg.region_data import (_load_frontal, global_findings, load_split, region_sentences, region_targets,
                                  report_corpus, with_regions, frontal_index)
from crrg.rrg.region_data import _section
from crrg.rrg.stage_model import _base_model_config, build_rrg, stage_of

log = logging.getLogger(__name__)


class DetectorDataset(Dataset):
    def __init__(self, records: list[StudyRecord], image_size: int):
        self.records, self.image_size = records, image_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        from crrg.rrg.detector import targets_from_regions

        record = self.records[i]
        image, scale, index = _load_frontal(record, self.image_size)
        target = targets_from_regions(record.regions, index)
        target["boxes"] = target["boxes"] * scale
        return image, target, region_targets(record, index)


def collate_detector(batch):
    """Images and detection targets as lists (torchvision's convention), region targets stacked."""
    regions = {k: torch.stack([b[2][k] for b in batch]) for k in batch[0][2]}
    return [b[0] for b in batch], [b[1] for b in batch], regions


class StudyFeatureDataset(Dataset):
    """Per study: cached RoI features, region / finding targets, the region sentences and, with an
    attached classifier, its finding probabilities (``conditions``, NaN for the findings it lacks)."""

    def __init__(self, records: list[StudyRecord], features: torch.Tensor, conditions: torch.Tensor | None = None):
        self.records, self.features, self.conditions = records, features, conditions

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.records[i]
        index = frontal_index(record)
        item = region_targets(record, index)
        item["features"] = self.features[i].float()
        item["sentences"] = region_sentences(record, index)
        has_abnormal = bool((item["abnormal"] * item["known"]).sum() > 0)
        item["impression"] = record.impression.strip() if has_abnormal and record.impression.strip() else None
        item["global"] = global_findings(record)
        if self.conditions is not None:
            item["conditions"] = self.conditions[i].float()
        return item


def collate_studies(batch: list[dict]) -> dict[str, Any]:
    out = {k: torch.stack([b[k] for b in batch]) for k in ("features", "selected", "abnormal", "known", "findings")}
    if all("conditions" in b for b in batch):
        out["conditions"] = torch.stack([b["conditions"] for b in batch])
    out["sentences"] = [(row, region, text) for row, b in enumerate(batch) for region, text in b["sentences"]]
    out["impressions"] = [(row, b["impression"]) for row, b in enumerate(batch) if b.get("impression")]
    out["globals"] = [(row, b["global"]) for row, b in enumerate(batch) if b.get("global") is not None]
    return out


class TextDataset(Dataset):
    def __init__(self, texts: list[str]):
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> str:
        return self.texts[i]


def _identity(batch):
    return batch


class RRGDataModule(L.LightningDataModule):
    """``model``: the training module's model, whose frozen detector gives the cached features of the
    later stages (without one, e.g. outside the engine, a model is built from the config)."""

    def __init__(self, config: dict, model=None):
        super().__init__()
        self.config = config
        self.model = model
        self.stage_name = stage_of(config)
        trainer = _section(config, "trainer")
        self.batch_size = int(trainer.get("batch_size", 8))
        self.num_workers = int(trainer.get("num_workers", 0))

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "_ready", False):
            return
        train = load_split(self.config, "train_split", "train")
        val = load_split(self.config, "val_split", "val")
        if self.stage_name == "pretrain":
            texts = report_corpus(self.config)
            cut = max(1, len(texts) // 50)
            self.train_set, self.val_set = TextDataset(texts[cut:]), TextDataset(texts[:cut])
        elif self.stage_name == "detector":
            size = _model_image_size(self.config)
            self.train_set = DetectorDataset(with_regions(train), size)
            self.val_set = DetectorDataset(with_regions(val), size) if val else None
        else:
            model = self.model if self.model is not None else build_rrg(self.config)
            cache = feature_cache_dir(self.config)
            train = with_regions(train)
            val = with_regions(val) if val else []
            use = self.stage_name != "classifiers" and bool(_section(self.config, "loss").get("condition_on_classifier", True))

            def dataset(records: list[StudyRecord], tag: str) -> StudyFeatureDataset:
                conditions = classifier_conditions(model, records, cache, tag) if use else None
                return StudyFeatureDataset(records, compute_features(model, records, cache, tag), conditions)

            modes = {m: m.training for m in model.modules()}
            model.eval()
            try:
                self.train_set = dataset(train, "train")
                self.val_set = dataset(val, "val") if val else None
            finally:  # the training module's model: leave its train/eval modes as they were
                for m, training in modes.items():
                    m.training = training
        self._ready = True

    def _collate(self):
        return {"detector": collate_detector, "pretrain": _identity}.get(self.stage_name, collate_studies)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          collate_fn=self._collate())

    def val_dataloader(self):
        if self.val_set is None or len(self.val_set) == 0:
            return []
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=self._collate())


def _model_image_size(config: dict) -> int:
    model_cfg = _section(config, "model")
    if model_cfg.get("init"):
        base = json.loads((Path(model_cfg["init"]) / "config.json").read_text())
    else:
        base = _base_model_config(config)
    overrides = (model_cfg.get("overrides") or {}).get("detector", {})
    return int(overrides.get("image_size", base.get("detector", {}).get("image_size", 256)))
