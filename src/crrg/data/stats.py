"""Summary numbers of a manifest: studies per split, image views, label prevalence, report lengths.

Computed in one streaming pass, so it works on a full MIMIC manifest. Report length is the number of
whitespace-separated words of findings + impression (:attr:`StudyRecord.report`), the text a
generator is trained to write.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from crrg.observations import CHEXPERT_14, VIEWS
from crrg.records import SPLITS, StudyRecord, iter_manifest


@dataclass
class LabelCounts:
    positive: int = 0
    negative: int = 0
    uncertain: int = 0
    missing: int = 0

    @property
    def prevalence(self) -> float | None:
        """Share of studies labelled positive among all studies (uncertain and missing count as not positive).

        None when no study carries a label for the observation (e.g. IU X-Ray before labelling), so
        an unlabelled dataset does not read as 0 % prevalence.
        """
        total = self.positive + self.negative + self.uncertain + self.missing
        return self.positive / total if total and total != self.missing else None


@dataclass
class LengthSummary:
    count: int = 0
    mean: float | None = None
    median: float | None = None
    p95: float | None = None
    max: int | None = None


@dataclass
class ManifestStats:
    studies: int = 0
    patients: int = 0
    images: int = 0
    studies_without_images: int = 0
    studies_without_report: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)
    views_per_split: dict[str, dict[str, int]] = field(default_factory=dict)
    labels: dict[str, LabelCounts] = field(default_factory=dict)
    report_words: LengthSummary = field(default_factory=LengthSummary)
    report_words_per_split: dict[str, LengthSummary] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name, counts in self.labels.items():
            d["labels"][name]["prevalence"] = counts.prevalence
        return d


def _lengths(values: list[int]) -> LengthSummary:
    import numpy as np

    if not values:
        return LengthSummary()
    arr = np.asarray(values)
    return LengthSummary(count=len(values), mean=round(float(arr.mean()), 2), median=float(np.median(arr)),
                         p95=float(np.percentile(arr, 95)), max=int(arr.max()))


def compute_stats(records: Iterable[StudyRecord]) -> ManifestStats:
    stats = ManifestStats()
    splits: Counter[str] = Counter()
    views: Counter[str] = Counter()
    per_split_views: dict[str, Counter[str]] = {}
    labels = {name: LabelCounts() for name in CHEXPERT_14}
    lengths: dict[str, list[int]] = {}
    patients: set[str] = set()
    for record in records:
        stats.studies += 1
        splits[record.split] += 1
        if record.patient_id is not None:
            patients.add(record.patient_id)
        stats.images += len(record.images)
        stats.studies_without_images += not record.images
        split_views = per_split_views.setdefault(record.split, Counter())
        for image in record.images:
            views[image.view] += 1
            split_views[image.view] += 1
        for name in CHEXPERT_14:
            value = record.labels.get(name)
            counts = labels[name]
            if value == 1:
                counts.positive += 1
            elif value == 0:
                counts.negative += 1
            elif value == -1:
                counts.uncertain += 1
            else:
                counts.missing += 1
        report = record.report
        if not report:
            stats.studies_without_report += 1
        else:
            lengths.setdefault(record.split, []).append(len(report.split()))
    stats.patients = len(patients)
    order = [s for s in SPLITS if s in splits] + sorted(set(splits) - set(SPLITS))
    stats.splits = {s: splits[s] for s in order}
    stats.views = {v: views[v] for v in VIEWS if views[v]}
    stats.views_per_split = {s: {v: per_split_views[s][v] for v in VIEWS if per_split_views[s][v]} for s in order}
    stats.labels = labels
    stats.report_words = _lengths([n for values in lengths.values() for n in values])
    stats.report_words_per_split = {s: _lengths(lengths.get(s, [])) for s in order}
    return stats


def manifest_stats(path: str | os.PathLike) -> ManifestStats:
    return compute_stats(iter_manifest(path, resolve_paths=False))
