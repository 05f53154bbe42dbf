"""Training samples for ClinicalBLIP: study records -> (images, instruction with prior knowledge, report).

During training each sample's instruction is drawn from the configured prompt variants, so one model
learns to use whatever prior knowledge it is given and the ablation (none / indication / findings)
can be measured on that one model. Findings in training prompts come from the record's labels
(ground truth) unless a predictions file of a classifier is given, which matches test conditions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch.utils.data import Dataset

from crrg.blip.model import report_target
from crrg.blip.prompts import PROMPT_VARIANTS, PromptConfig, build_instruction, labels_to_probabilities
from crrg.errors import ConfigError, InputError
from crrg.records import StudyRecord

log = logging.getLogger(__name__)


def usable_records(records: Sequence[StudyRecord]) -> list[StudyRecord]:
    """Records with at least one image and some report text; the rest cannot teach report writing."""
    keep = [r for r in records if r.images and report_target(r.findings, r.impression)]
    if len(keep) < len(records):
        log.info("ClinicalBLIP: skipped %d of %d studies without images or report", len(records) - len(keep), len(records))
    return keep


def read_findings_file(path: str | Path) -> dict[str, dict[str, float]]:
    """``{study_id: {observation: probability}}`` written by a classifier run (JSON)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read findings file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise InputError(f"findings file {path} must map study ids to {{observation: probability}} objects")
    return {k: {n: float(p) for n, p in v.items()} for k, v in data.items()}


def study_findings(record: StudyRecord, variant: str, predictions: Mapping[str, Mapping[str, float]] | None) -> dict[str, float]:
    """The findings a prompt of ``variant`` shows for ``record``."""
    if variant == "predicted" and predictions is not None:
        if record.id not in predictions:
            raise InputError(f"findings file has no prediction for study {record.id!r}")
        return dict(predictions[record.id])
    return labels_to_probabilities(record.labels)


class BlipStudyDataset(Dataset):
    """Records -> samples ``{"pixels", "views", "instruction", "target", "id"}``; images are decoded once."""

    def __init__(self, records: Sequence[StudyRecord], prepare: Callable[..., dict[str, Any]], prompt: PromptConfig,
                 variants: Sequence[str], predictions: Mapping[str, Mapping[str, float]] | None = None,
                 cache_images: bool = True, images_read: Callable[[list[str]], list[int]] | None = None) -> None:
        bad = [v for v in variants if v not in PROMPT_VARIANTS]
        if bad or not variants:
            raise ConfigError(f"prompt variants {list(variants)} must be a non-empty subset of {list(PROMPT_VARIANTS)}")
        self.records = usable_records(records)
        if not self.records:
            raise InputError("no study with images and report text to train ClinicalBLIP on")
        self.prepare, self.prompt, self.variants = prepare, prompt, list(variants)
        self.predictions = predictions
        # a model that reads some of a study's films (InstructBLIP: the frontal one) says which: only those are decoded
        self.images_read = images_read
        self.cache: dict[int, tuple[torch.Tensor, list[str]]] | None = {} if cache_images else None

    def __len__(self) -> int:
        return len(self.records)

    def _images(self, index: int) -> tuple[torch.Tensor, list[str]]:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        from crrg.image import load_image

        refs = list(self.records[index].images)
        if self.images_read is not None:
            refs = [refs[i] for i in self.images_read([im.view for im in refs])]
        sample = self.prepare([load_image(im.path) for im in refs], [im.view for im in refs], "")
        # half precision halves the cache; radiograph pixels do not need more for a 0..1 range
        entry = (sample["pixels"].half(), sample["views"])
        if self.cache is not None:
            self.cache[index] = entry
        return entry

    def instruction(self, record: StudyRecord, variant: str) -> str:
        config = PromptConfig(**{**self.prompt.__dict__, "variant": variant})
        return build_instruction(record.indication, study_findings(record, variant, self.predictions), config)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        pixels, views = self._images(index)
        # torch's global RNG: the engine seeds it per (seed, epoch, index) while a sample loads, so resume draws the same
        variant = self.variants[int(torch.randint(len(self.variants), ()))] if len(self.variants) > 1 else self.variants[0]
        return {"pixels": pixels.float(), "views": views, "instruction": self.instruction(record, variant),
                "target": report_target(record.findings, record.impression), "id": record.id}
