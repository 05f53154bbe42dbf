"""All report metrics in one call: COCO-caption NLG metrics and clinical efficacy."""

from __future__ import annotations

from typing import Mapping, Sequence

from crrg.evaluation.clinical import clinical_efficacy
from crrg.evaluation.nlg import NlgScorer, check_same_ids


def evaluate_reports(
    preds: Mapping[str, str],
    refs: Mapping[str, str | Sequence[str]],
    meteor: bool = True,
    clinical: bool = True,
    scorer: NlgScorer | None = None,
) -> dict:
    """``{bleu_1..4, meteor, rouge_l, cider, ce_*}`` for ``preds`` against ``refs`` (same ids).

    With several references per study the NLG metrics use all of them and clinical efficacy uses the
    first. Pass a ``scorer`` to reuse a running METEOR process across calls.
    """
    check_same_ids(preds, refs)
    if scorer is None:
        with NlgScorer(meteor=meteor) as own:
            metrics: dict = own.score(preds, refs)
    else:
        metrics = scorer.score(preds, refs)
    if clinical:
        first = {k: (v if isinstance(v, str) else list(v)[0]) for k, v in refs.items()}
        metrics.update(clinical_efficacy(preds, first))
    metrics["n"] = len(refs)
    return metrics
