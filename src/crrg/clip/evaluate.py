"""Classifier evaluation: per-label AUC / accuracy / F1, macro averages, ROC curves, saved outputs.

Labels with a single class in the evaluated data have no AUC; they are reported as ``None`` and
left out of the macro AUC (rather than counted as 0.5), and the number of labels averaged is
reported beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from crrg.io import atomic_open, atomic_save_file, atomic_write_json


def classification_report(y_true: np.ndarray, y_score: np.ndarray, names: Sequence[str], thresholds: dict[str, float]) -> dict:
    from sklearn.metrics import f1_score, roc_auc_score

    per_label = {}
    for j, name in enumerate(names):
        t, s = y_true[:, j].astype(int), y_score[:, j]
        pred = (s >= thresholds[name]).astype(int)
        auc = float(roc_auc_score(t, s)) if len(np.unique(t)) == 2 else None
        per_label[name] = {
            "auc": auc,
            "accuracy": float((pred == t).mean()),
            "f1": float(f1_score(t, pred, zero_division=0)),
            "threshold": float(thresholds[name]),
            "positives": int(t.sum()),
            "n": int(len(t)),
        }
    aucs = [m["auc"] for m in per_label.values() if m["auc"] is not None]
    return {
        "per_label": per_label,
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "labels_with_auc": len(aucs),
        "accuracy": float(np.mean([m["accuracy"] for m in per_label.values()])),
        "macro_f1": float(np.mean([m["f1"] for m in per_label.values()])),
        "n_images": int(y_true.shape[0]),
    }


def plot_roc_curves(path: str | Path, y_true: np.ndarray, y_score: np.ndarray, names: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(6, 6))
    for j, name in enumerate(names):
        if len(np.unique(y_true[:, j])) < 2:
            continue
        fpr, tpr, _ = roc_curve(y_true[:, j], y_score[:, j])
        ax.plot(fpr, tpr, label=f"{name} ({roc_auc_score(y_true[:, j], y_score[:, j]):.3f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_save_file(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)


def write_outputs(out: str | Path, report: dict, items, y_score: np.ndarray, names: Sequence[str]) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", report)
    with atomic_open(out / "predictions.jsonl") as handle:
        for item, row in zip(items, y_score):
            handle.write(json.dumps({"id": item.id, "image": item.path,
                                     "probabilities": {n: float(p) for n, p in zip(names, row)},
                                     "target": dict(zip(names, item.target))}) + "\n")
    plot_roc_curves(out / "roc.png", np.array([it.target for it in items]), y_score, names)
