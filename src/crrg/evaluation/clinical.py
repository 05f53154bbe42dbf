"""Clinical efficacy: do the generated and the reference report state the same findings?

Both reports are labelled with crrg's CheXpert-style labeler and the labels compared. A label counts
as *positive* when it is 1 or -1 (uncertain = positive, the convention of R2Gen / RGRG / PromptMRG),
and as negative when it is 0 or not mentioned. Three summaries, all in ``[0, 1]``:

``ce_micro5_*``
    Micro-averaged precision / recall / F1 over every (study, observation) pair of the five
    CheXpert competition observations (:data:`crrg.observations.MICRO_5`); the number RGRG calls
    "micro-5 F1".
``ce_example14_*``
    Example-based: precision / recall / F1 of each study's set of positive observations among the 14,
    averaged over studies. A study where neither report has a positive observation agrees perfectly
    and scores 1; a study where only one side has positives scores 0 (precision or recall is 0 and
    the undefined one is taken as 0).
``ce_macro14_f1``
    F1 of each of the 14 observations over studies, averaged over the observations that are positive
    in at least one reference or prediction (an observation absent from both sides has no defined
    F1 and is left out rather than counted as 0 or 1).

The maths (:func:`ce_from_labels`) is a pure function of label dicts so it can be checked without
the labeler.

``convention="chexbert"`` (``crrg evaluate --ce-convention chexbert``) instead maps uncertain to
negative and aggregates exactly as the CheXbert-F1 packages do (:mod:`crrg.evaluation.label_f1`:
macro over all 14 observations, a study with no positive on either side scores 0), adding micro-14
and macro-5; ``docs/evaluation.md`` lists where crrg's labeler and CheXbert still differ.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from crrg.errors import InputError
from crrg.observations import CHEXPERT_14, MICRO_5

LabelDict = Mapping[str, "int | None"]
CE_CONVENTIONS: tuple[str, ...] = ("crrg", "chexbert")
CE_KEYS: tuple[str, ...] = (
    "ce_micro5_precision", "ce_micro5_recall", "ce_micro5_f1",
    "ce_example14_precision", "ce_example14_recall", "ce_example14_f1",
    "ce_macro14_f1",
)


def positive_matrix(labels: Sequence[LabelDict], observations: Sequence[str] = CHEXPERT_14) -> np.ndarray:
    """``(N, K)`` bool: label is 1 or -1 (uncertain counts as positive)."""
    from crrg.evaluation.label_f1 import binarize

    return binarize(labels, "positive", observations)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def ce_from_labels(pred_labels: Sequence[LabelDict], ref_labels: Sequence[LabelDict], convention: str = "crrg") -> dict:
    """The :data:`CE_KEYS` metrics plus ``ce_f1_per_observation`` from aligned lists of label dicts."""
    if len(pred_labels) != len(ref_labels):
        raise InputError(f"{len(pred_labels)} predicted label sets but {len(ref_labels)} reference label sets")
    if not ref_labels:
        raise InputError("nothing to evaluate: no reports given")
    if convention not in CE_CONVENTIONS:
        raise InputError(f"unknown CE convention {convention!r}: use one of {', '.join(CE_CONVENTIONS)}")
    if convention == "chexbert":
        from crrg.evaluation.label_f1 import binarize, label_f1_scores

        return label_f1_scores(binarize(pred_labels, "negative"), binarize(ref_labels, "negative"), prefix="ce")
    pred = positive_matrix(pred_labels)
    ref = positive_matrix(ref_labels)

    five = [CHEXPERT_14.index(name) for name in MICRO_5]
    tp = int((pred[:, five] & ref[:, five]).sum())
    p5 = _ratio(tp, pred[:, five].sum())
    r5 = _ratio(tp, ref[:, five].sum())

    hits = (pred & ref).sum(axis=1)
    n_pred, n_ref = pred.sum(axis=1), ref.sum(axis=1)
    both_empty = (n_pred == 0) & (n_ref == 0)
    p_ex = np.where(both_empty, 1.0, np.divide(hits, n_pred, out=np.zeros(len(hits)), where=n_pred > 0))
    r_ex = np.where(both_empty, 1.0, np.divide(hits, n_ref, out=np.zeros(len(hits)), where=n_ref > 0))
    f_ex = np.where(p_ex + r_ex > 0, 2 * p_ex * r_ex / np.maximum(p_ex + r_ex, 1e-300), 0.0)

    per_obs: dict[str, float | None] = {}
    for j, name in enumerate(CHEXPERT_14):
        if not (pred[:, j].any() or ref[:, j].any()):
            per_obs[name] = None
            continue
        t = int((pred[:, j] & ref[:, j]).sum())
        per_obs[name] = _f1(_ratio(t, pred[:, j].sum()), _ratio(t, ref[:, j].sum()))
    defined = [v for v in per_obs.values() if v is not None]

    return {
        "ce_micro5_precision": p5,
        "ce_micro5_recall": r5,
        "ce_micro5_f1": _f1(p5, r5),
        "ce_example14_precision": float(p_ex.mean()),
        "ce_example14_recall": float(r_ex.mean()),
        "ce_example14_f1": float(f_ex.mean()),
        "ce_macro14_f1": float(np.mean(defined)) if defined else 0.0,
        "ce_f1_per_observation": per_obs,
    }


def clinical_efficacy(
    preds: Mapping[str, str],
    refs: Mapping[str, str],
    labeler: Callable[[list[str]], list[dict]] | None = None,
    convention: str = "crrg",
) -> dict:
    """Label predicted and reference reports (``{id: text}``, same ids) and compare: see the module docstring."""
    from crrg.evaluation.nlg import check_same_ids

    check_same_ids(preds, refs)
    if labeler is None:
        from crrg.labeler import label_reports as labeler
    keys = sorted(refs)
    for side, texts in (("prediction", preds), ("reference", refs)):
        for key in keys:
            if not isinstance(texts[key], str):
                raise InputError(f"{side} {key!r} must be a single report string for clinical efficacy")
    pred_labels = labeler([preds[k] for k in keys])
    ref_labels = labeler([refs[k] for k in keys])
    return ce_from_labels(pred_labels, ref_labels, convention)
