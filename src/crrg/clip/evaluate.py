"""Classifier evaluation outputs: metrics from :mod:`crrg.evaluation.classification`, saved as files.

Unknown labels (``nan`` in ``y_true``: not mentioned or uncertain) are left out of that label's
metrics, as everywhere in crrg; labels with one class only have no AUC and are left out of the
macro AUC (listed under ``skipped``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from crrg.io import atomic_open, atomic_write_json


def classification_report(y_true: np.ndarray, y_score: np.ndarray, names: Sequence[str], thresholds: dict[str, float]) -> dict:
    from crrg.evaluation.classification import classification_metrics

    report = classification_metrics(y_true, y_score, list(names), thresholds)
    report["n_images"] = int(y_true.shape[0])
    report["labels_with_auc"] = sum(v is not None for v in report["auc"].values())
    return report


def write_outputs(out: str | Path, report: dict, items, y_true: np.ndarray, y_score: np.ndarray, names: Sequence[str]) -> None:
    from crrg.evaluation.classification import plot_roc

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", report)
    with atomic_open(out / "predictions.jsonl") as handle:
        for item, row, truth in zip(items, y_score, y_true):
            handle.write(json.dumps({"id": item.id, "image": item.path,
                                     "probabilities": {n: float(p) for n, p in zip(names, row)},
                                     "target": {n: (None if np.isnan(t) else int(t)) for n, t in zip(names, truth)}}) + "\n")
    plot_roc(y_true, y_score, list(names), out / "roc.png")


def targets_with_unknowns(items) -> np.ndarray:
    """``(N, L)`` targets with ``nan`` where an item's label mask is 0 (unknown)."""
    target = np.array([it.target for it in items], dtype=np.float64)
    mask = np.array([it.mask for it in items], dtype=np.float64)
    return np.where(mask > 0, target, np.nan)
