"""Multi-label classification metrics: AUC, accuracy and F1 per label, threshold choice, ROC plots.

Conventions shared by every classifier in crrg (CLIP zero-shot, supervised heads, region
classifiers) so their numbers line up:

* ``y_true`` is ``(N, L)`` with 1 / 0 and ``nan`` for unknown (a CheXpert label that is not mentioned
  or uncertain, mapped by the caller); unknown entries are left out of that label's metrics only.
* ``y_score`` is ``(N, L)``, larger = more likely positive (probabilities or logits).
* A study is predicted positive when ``score >= threshold`` (the rule of ``sklearn.metrics.roc_curve``).
* A label whose known entries are all one class has no AUC: it is skipped, reported in ``skipped``
  with the reason, and left out of ``macro_auc``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from crrg.errors import InputError
from crrg.io import atomic_save_file

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5


def _check(y_true, y_score, names: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    t = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    if t.ndim == 1:
        t, s = t[:, None], s.reshape(-1, 1) if s.ndim == 1 else s
    if t.ndim != 2 or s.shape != t.shape:
        raise InputError(f"y_true {t.shape} and y_score {s.shape} must both be (N, L)")
    names = list(names) if names is not None else [f"label_{j}" for j in range(t.shape[1])]
    if len(names) != t.shape[1]:
        raise InputError(f"{len(names)} names for {t.shape[1]} label columns")
    known = t[~np.isnan(t)]
    if not np.isin(known, (0.0, 1.0)).all():
        raise InputError("y_true must contain only 0, 1 or nan")
    if not np.isfinite(s).all():
        raise InputError("y_score contains nan or infinite values")
    return t, s, names


def _thresholds_for(thresholds, names: list[str]) -> np.ndarray:
    if thresholds is None:
        return np.full(len(names), DEFAULT_THRESHOLD)
    if isinstance(thresholds, Mapping):
        missing = [n for n in names if n not in thresholds]
        if missing:
            raise InputError(f"no threshold for label(s) {missing[:5]}")
        return np.array([float(thresholds[n]) for n in names])
    arr = np.asarray(thresholds, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(len(names), float(arr))
    if arr.shape != (len(names),):
        raise InputError(f"{arr.size} thresholds for {len(names)} labels")
    return arr


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def classification_metrics(
    y_true: np.ndarray,
    y_score: np.ndarray,
    names: Sequence[str] | None = None,
    thresholds: float | Sequence[float] | Mapping[str, float] | None = None,
) -> dict:
    """Per-label ``auc``, ``accuracy``, ``precision``, ``recall``, ``f1`` (dicts by name) and their macro means.

    ``thresholds``: one for all labels, one per label (sequence or ``{name: t}``), or None for 0.5.
    Keys: ``auc``, ``macro_auc``, ``accuracy``, ``mean_accuracy``, ``precision``, ``recall``, ``f1``,
    ``macro_f1``, ``thresholds``, ``support`` (``{name: {"positive", "negative"}}``) and ``skipped``
    (``{name: reason}`` for labels without an AUC).
    """
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    t, s, names = _check(y_true, y_score, names)
    th = _thresholds_for(thresholds, names)
    out: dict = {k: {} for k in ("auc", "accuracy", "precision", "recall", "f1", "thresholds", "support", "skipped")}
    for j, name in enumerate(names):
        known = ~np.isnan(t[:, j])
        truth, score = t[known, j].astype(int), s[known, j]
        n_pos, n_neg = int(truth.sum()), int(len(truth) - truth.sum())
        out["support"][name] = {"positive": n_pos, "negative": n_neg}
        out["thresholds"][name] = float(th[j])
        if len(truth) == 0:
            out["skipped"][name] = "no known labels"
            for key in ("auc", "accuracy", "precision", "recall", "f1"):
                out[key][name] = None
            continue
        if n_pos == 0 or n_neg == 0:
            out["skipped"][name] = f"only one class among known labels ({n_pos} positive, {n_neg} negative): no AUC"
            out["auc"][name] = None
        else:
            out["auc"][name] = float(roc_auc_score(truth, score))
        pred = (score >= th[j]).astype(int)
        p, r, f, _ = precision_recall_fscore_support(truth, pred, average="binary", zero_division=0)
        out["accuracy"][name] = float((pred == truth).mean())
        out["precision"][name], out["recall"][name], out["f1"][name] = float(p), float(r), float(f)
    for name, reason in out["skipped"].items():
        log.info("label %s skipped for AUC: %s", name, reason)
    out["macro_auc"] = _mean(out["auc"].values())
    out["mean_accuracy"] = _mean(out["accuracy"].values())
    out["macro_f1"] = _mean(out["f1"].values())
    return out


def choose_thresholds(
    y_true: np.ndarray,
    y_score: np.ndarray,
    names: Sequence[str] | None = None,
    method: str = "youden",
) -> dict[str, float]:
    """Per-label thresholds chosen on validation data: ``"youden"`` (max TPR - FPR) or ``"f1"`` (max F1).

    Labels with one class among known entries keep the default 0.5 (nothing to choose from).
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    if method not in ("youden", "f1"):
        raise InputError(f"threshold method {method!r} is not 'youden' or 'f1'")
    t, s, names = _check(y_true, y_score, names)
    chosen: dict[str, float] = {}
    for j, name in enumerate(names):
        known = ~np.isnan(t[:, j])
        truth, score = t[known, j].astype(int), s[known, j]
        if truth.size == 0 or truth.min() == truth.max():
            chosen[name] = DEFAULT_THRESHOLD
            continue
        if method == "youden":
            fpr, tpr, cut = roc_curve(truth, score)
            finite = np.isfinite(cut)
            best = np.argmax(np.where(finite, tpr - fpr, -np.inf))
            chosen[name] = float(cut[best])
        else:
            precision, recall, cut = precision_recall_curve(truth, score)
            f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
            chosen[name] = float(cut[int(np.argmax(f1[:-1]))])
    return chosen


def plot_roc(
    y_true: np.ndarray,
    y_score: np.ndarray,
    names: Sequence[str] | None,
    path: str | os.PathLike,
    title: str = "ROC",
) -> Path:
    """Write one ROC curve per label (with its AUC in the legend) to a PNG; labels without an AUC are left out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    t, s, names = _check(y_true, y_score, names)
    fig = Figure(figsize=(6, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    drawn = 0
    for j, name in enumerate(names):
        known = ~np.isnan(t[:, j])
        truth, score = t[known, j].astype(int), s[known, j]
        if truth.size == 0 or truth.min() == truth.max():
            continue
        fpr, tpr, _ = roc_curve(truth, score)
        ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUC {roc_auc_score(truth, score):.3f})")
        drawn += 1
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    if drawn:
        ax.legend(loc="lower right", fontsize="small")
    path = Path(path)
    atomic_save_file(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path
