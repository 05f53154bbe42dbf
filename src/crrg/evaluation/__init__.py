"""Metrics: COCO-caption NLG metrics (pycocoevalcap) under a named protocol, clinical efficacy, the field's
model-based metrics (``crrg[clinical]``), paired bootstrap intervals, classification metrics.

``evaluate_reports(preds, refs)`` gives the offline report metrics at once; see :mod:`.nlg`,
:mod:`.protocols`, :mod:`.clinical`, :mod:`.label_f1`, :mod:`.clinical_models`, :mod:`.bootstrap`,
:mod:`.classification` and ``docs/evaluation.md`` for the definitions.
"""

from crrg.evaluation.bootstrap import paired_bootstrap
from crrg.evaluation.clinical import CE_KEYS, ce_from_labels, clinical_efficacy
from crrg.evaluation.label_f1 import label_f1_scores
from crrg.evaluation.nlg import NLG_KEYS, NlgScorer, nlg_metrics, sanitize_for_java
from crrg.evaluation.protocols import TextProtocol
from crrg.evaluation.reports import EvaluationConfig, build_blocks, evaluate_reports

__all__ = [
    "CE_KEYS",
    "NLG_KEYS",
    "EvaluationConfig",
    "NlgScorer",
    "TextProtocol",
    "build_blocks",
    "ce_from_labels",
    "clinical_efficacy",
    "evaluate_reports",
    "label_f1_scores",
    "nlg_metrics",
    "paired_bootstrap",
    "sanitize_for_java",
]
