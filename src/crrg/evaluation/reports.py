"""All report metrics in one call: NLG metrics under a named protocol, clinical efficacy, and on request
the clinical metrics of the standard packages (:mod:`crrg.evaluation.clinical_models`).

Metric sets (``crrg evaluate --metrics``): ``nlg`` (BLEU-1..4, METEOR, ROUGE-L, CIDEr), ``ce``
(crrg's labeler, offline), and the model-based ``chexbert``, ``semb``, ``radgraph``, ``bertscore``,
``ratescore``, ``radcliq``, ``green`` (``crrg[clinical]``; weights from the Hugging Face hub).
The default, ``nlg,ce``, needs no network and no download.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from crrg.errors import InputError
from crrg.evaluation.blocks import CeBlock, MetricBlock, NlgBlock, score_all
from crrg.evaluation.nlg import NlgScorer, _as_reference_lists, check_same_ids
from crrg.evaluation.protocols import TextProtocol, prepare_nlg_inputs

OFFLINE_SETS: tuple[str, ...] = ("nlg", "ce")
MODEL_SETS: tuple[str, ...] = ("chexbert", "semb", "radgraph", "bertscore", "ratescore", "radcliq", "green")
METRIC_SETS: tuple[str, ...] = OFFLINE_SETS + MODEL_SETS


def parse_metric_sets(spec: str) -> tuple[str, ...]:
    """``"nlg,ce,chexbert"`` or ``"all"`` -> the sets in :data:`METRIC_SETS` order; unknown names are an InputError."""
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    if "all" in names:
        return METRIC_SETS
    unknown = [s for s in names if s not in METRIC_SETS]
    if unknown or not names:
        raise InputError(f"unknown metric set(s) {', '.join(unknown) or spec!r}: choose from "
                         f"{', '.join(METRIC_SETS)} or all")
    return tuple(s for s in METRIC_SETS if s in names)


@dataclass
class EvaluationConfig:
    """What to compute; every field is recorded in the metrics JSON."""

    metrics: tuple[str, ...] = OFFLINE_SETS
    """Metric sets (see :data:`METRIC_SETS`)."""
    meteor: bool = True
    """METEOR needs a Java process with a 2 GB heap."""
    protocol: TextProtocol = field(default_factory=TextProtocol)
    """Text processing before the NLG metrics (coco or r2gen)."""
    ce_convention: str = "crrg"
    """crrg's labeler: ``crrg`` (uncertain = positive) or ``chexbert`` (uncertain = negative, CheXbert-F1 aggregation)."""
    uncertain: str = "negative"
    """CheXbert F1: what an uncertain CheXbert label counts as."""


def _first_refs(refs: Mapping[str, str | Sequence[str]]) -> dict[str, str]:
    return {k: (v if isinstance(v, str) else list(v)[0]) for k, v in refs.items()}


def build_blocks(
    preds: Mapping[str, str],
    refs: Mapping[str, str | Sequence[str]],
    config: EvaluationConfig,
    scorer: NlgScorer | None = None,
    models: "object | None" = None,
    labeler=None,
) -> tuple[list[MetricBlock], list[str]]:
    """``(blocks, keys)``: the metric blocks of one system on the sorted ids, and the ids themselves.

    ``models`` is a :class:`crrg.evaluation.clinical_models.ClinicalModels` (needed for the model sets).
    """
    check_same_ids(preds, refs)
    keys = sorted(map(str, refs))
    blocks: list[MetricBlock] = []
    if "nlg" in config.metrics:
        if scorer is None:
            raise ValueError("the nlg metric set needs an NlgScorer")
        gts, res = prepare_nlg_inputs(config.protocol, preds, refs)
        blocks.append(NlgBlock([gts[k] for k in keys], [res[k] for k in keys], scorer))
    first = _first_refs(_as_reference_lists(refs)) if any(s != "nlg" for s in config.metrics) else {}
    if "ce" in config.metrics:
        if labeler is None:
            from crrg.labeler import label_reports as labeler
        for side, texts in (("prediction", preds), ("reference", first)):
            bad = [k for k in keys if not isinstance(texts[k], str)]
            if bad:
                raise InputError(f"{side} {bad[0]!r} must be a single report string for clinical efficacy")
        blocks.append(CeBlock(labeler([preds[k] for k in keys]), labeler([first[k] for k in keys]), config.ce_convention))
    wanted = [s for s in MODEL_SETS if s in config.metrics]
    if wanted:
        if models is None:
            raise ValueError("model-based metric sets need a ClinicalModels object")
        blocks.extend(models.blocks(wanted, [preds[k] for k in keys], [first[k] for k in keys]))
    return blocks, keys


def evaluate_reports(
    preds: Mapping[str, str],
    refs: Mapping[str, str | Sequence[str]],
    meteor: bool = True,
    clinical: bool = True,
    scorer: NlgScorer | None = None,
    protocol: TextProtocol | None = None,
    ce_convention: str = "crrg",
) -> dict:
    """``{bleu_1..4, meteor, rouge_l, cider, ce_*, n}`` for ``preds`` against ``refs`` (same ids), offline.

    With several references per study the NLG metrics use all of them and clinical efficacy uses the
    first. Pass a ``scorer`` to reuse a running METEOR process across calls.
    """
    config = EvaluationConfig(metrics=("nlg", "ce") if clinical else ("nlg",), meteor=meteor,
                              protocol=protocol or TextProtocol(), ce_convention=ce_convention)
    check_same_ids(preds, refs)
    if scorer is None:
        with NlgScorer(meteor=meteor) as own:
            blocks, keys = build_blocks(preds, refs, config, own)
            metrics = score_all(blocks, np.arange(len(keys)))
    else:
        blocks, keys = build_blocks(preds, refs, config, scorer)
        metrics = score_all(blocks, np.arange(len(keys)))
    metrics["n"] = len(keys)
    return metrics
