"""Metrics: COCO-caption NLG metrics (pycocoevalcap), clinical efficacy, classification metrics.

``evaluate_reports(preds, refs)`` gives every report metric at once; see :mod:`.nlg`,
:mod:`.clinical` and :mod:`.classification` for the definitions.
"""

from crrg.evaluation.clinical import CE_KEYS, ce_from_labels, clinical_efficacy
from crrg.evaluation.nlg import NLG_KEYS, NlgScorer, nlg_metrics, sanitize_for_java
from crrg.evaluation.reports import evaluate_reports

__all__ = [
    "CE_KEYS",
    "NLG_KEYS",
    "NlgScorer",
    "ce_from_labels",
    "clinical_efficacy",
    "evaluate_reports",
    "nlg_metrics",
    "sanitize_for_java",
]
