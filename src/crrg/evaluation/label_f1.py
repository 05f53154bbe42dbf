"""F1 over CheXpert label matrices, aggregated the way the CheXbert-F1 papers and packages do.

The packages that print CheXbert F1 (``f1chexbert``, RadEval, CXR-Report-Metric) binarise each
report's 14 labels and hand the two matrices to scikit-learn's ``classification_report``. This
module computes the same numbers with numpy so that crrg's own labeler can be aggregated the same
way (``--ce-convention chexbert``) and every formula is visible:

``micro``
    precision / recall / F1 from the (study, observation) counts pooled over the chosen columns.
``macro``
    F1 of each observation, averaged over *all* the columns; an observation that is positive on
    neither side scores 0 (scikit-learn's ``zero_division=0``).
``example`` (scikit-learn's "samples" average)
    precision / recall / F1 of each study's set of positive observations, averaged over studies;
    a study with no positive on either side scores 0.

Binarisation is the caller's policy: :func:`binarize` maps 1 to positive, 0 / None / blank to
negative and uncertain (-1) to negative (``uncertain="negative"``, the convention most recent papers
state for CheXbert F1) or positive (``"positive"``, f1chexbert's "rrg" mode and R2Gen-era CE).
"""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

import numpy as np

from crrg.observations import CHEXPERT_14, MICRO_5

Uncertain = Literal["negative", "positive"]
UNCERTAIN_POLICIES: tuple[str, ...] = ("negative", "positive")


def binarize(labels: Sequence[Mapping[str, "int | None"]], uncertain: str = "negative",
             observations: Sequence[str] = CHEXPERT_14) -> np.ndarray:
    """``(N, K)`` bool from label dicts: 1 is positive; -1 follows ``uncertain``; 0 and None are negative."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_POLICIES}, not {uncertain!r}")
    positive = {1, -1} if uncertain == "positive" else {1}
    out = np.zeros((len(labels), len(observations)), dtype=bool)
    for i, row in enumerate(labels):
        for j, name in enumerate(observations):
            out[i, j] = row.get(name) in positive
    return out


def _div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _f1(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    return _div(2 * p * r, p + r)


def micro(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    tp = float((pred & ref).sum())
    p, r = _div(tp, pred.sum()), _div(tp, ref.sum())
    return float(p), float(r), float(_f1(p, r))


def per_label_f1(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    tp = (pred & ref).sum(axis=0)
    return _f1(_div(tp, pred.sum(axis=0)), _div(tp, ref.sum(axis=0)))


def example_based(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    tp = (pred & ref).sum(axis=1)
    p, r = _div(tp, pred.sum(axis=1)), _div(tp, ref.sum(axis=1))
    return float(p.mean()), float(r.mean()), float(_f1(p, r).mean())


def label_f1_scores(pred: np.ndarray, ref: np.ndarray, prefix: str,
                    observations: Sequence[str] = CHEXPERT_14) -> dict:
    """The four CheXbert-F1 flavours (micro-5, macro-14, micro-14, example-based-14) of aligned ``(N, 14)`` bools.

    Keys are ``{prefix}_micro5_{precision,recall,f1}``, ``{prefix}_macro5_f1``,
    ``{prefix}_micro14_{...}``, ``{prefix}_macro14_f1``, ``{prefix}_example14_{...}`` and
    ``{prefix}_f1_per_observation``.
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape or pred.ndim != 2 or pred.shape[1] != len(observations):
        raise ValueError(f"label matrices must both be (N, {len(observations)}), got {pred.shape} and {ref.shape}")
    five = [list(observations).index(name) for name in MICRO_5]
    out: dict = {}
    for tag, cols in (("5", five), ("14", list(range(len(observations))))):
        p, r, f = micro(pred[:, cols], ref[:, cols])
        out.update({f"{prefix}_micro{tag}_precision": p, f"{prefix}_micro{tag}_recall": r, f"{prefix}_micro{tag}_f1": f})
        out[f"{prefix}_macro{tag}_f1"] = float(per_label_f1(pred[:, cols], ref[:, cols]).mean())
    p, r, f = example_based(pred, ref)
    out.update({f"{prefix}_example14_precision": p, f"{prefix}_example14_recall": r, f"{prefix}_example14_f1": f})
    out[f"{prefix}_f1_per_observation"] = dict(zip(observations, map(float, per_label_f1(pred, ref))))
    return out
