"""Metric blocks: per-study statistics computed once, re-aggregated over any sample of the studies.

Every metric family is a block with ``score(idx) -> {metric: value}``, where ``idx`` indexes the
studies (sorted ids) and may repeat a study. ``score(arange(n))`` is the ordinary number; a paired
bootstrap (:mod:`crrg.evaluation.bootstrap`) calls it with the same resampled ``idx`` for every
system. The expensive part (tokenizing, labelling, running a model) happens once, when the block is
built; only the aggregation runs per resample, so that 1,000 resamples stay affordable:

- :class:`NlgBlock`: corpus BLEU / ROUGE-L / CIDEr re-run by pycocoevalcap on the drawn segments (a
  study drawn twice counts twice), METEOR by one ``EVAL`` of the stored segment statistics.
- :class:`CeBlock`: crrg's labeler's labels, re-aggregated by :func:`ce_from_labels`.
- :class:`LabelF1Block`: binarised label matrices (CheXbert), re-aggregated by :func:`label_f1_scores`.
- :class:`PerSampleBlock`: per-study scores (RadGraph, BERTScore, ...), averaged (or another
  aggregate, e.g. 1 / mean for RadCliQ).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np


class MetricBlock(Protocol):
    def score(self, idx: np.ndarray) -> dict: ...


@dataclass
class NlgBlock:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr of protocol-processed texts (``gts``/``res`` as lists per study).

    The full set is scored by pycocoevalcap's scorers as usual. A resample reuses pycocoevalcap's own
    scorer objects with the segments cooked once (its ``BleuScorer`` / ``CiderScorer`` hold the cooked
    n-gram counts in ``crefs`` / ``ctest``; document frequencies and lengths are recomputed for each
    draw, as a corpus of the drawn segments would give), ROUGE-L is pycocoevalcap's mean of per-segment
    scores, METEOR one ``EVAL`` of stored statistics and CIDEr-D sparse algebra
    (:mod:`crrg.evaluation.cider_resample`): the same numbers, many times faster.
    """

    gts: list[list[str]]
    res: list[list[str]]
    scorer: "object"  # crrg.evaluation.nlg.NlgScorer
    meteor_stats: list[str] | None = None
    """Per-segment METEOR statistics, filled on the first resample."""
    _cooked: dict | None = field(default=None, repr=False)

    def _cook(self) -> dict:
        from pycocoevalcap.bleu.bleu_scorer import BleuScorer
        from pycocoevalcap.cider.cider_scorer import CiderScorer
        from pycocoevalcap.rouge.rouge import Rouge

        bleu, cider, rouge = BleuScorer(n=4), CiderScorer(n=4, sigma=6.0), Rouge()
        for ref, hyp in zip(self.gts, self.res):
            bleu += (hyp[0], ref)
            cider += (hyp[0], ref)
        rouge_l = np.array([rouge.calc_score(hyp, ref) for ref, hyp in zip(self.gts, self.res)])
        fast = None
        if all(len(ref) == 1 for ref in self.gts):
            from crrg.evaluation.cider_resample import CiderResampler

            fast = CiderResampler(cider.ctest, cider.crefs)
        return {"bleu": (bleu.crefs, bleu.ctest), "cider": (cider.crefs, cider.ctest), "cider_fast": fast,
                "rouge_l": rouge_l}

    def score(self, idx: np.ndarray) -> dict:
        if len(idx) == len(self.gts) and np.array_equal(idx, np.arange(len(idx))):
            keys = [str(j) for j in range(len(idx))]  # the plain pycocoevalcap numbers
            return self.scorer.score_tokenized(dict(zip(keys, self.gts)), dict(zip(keys, self.res)))
        from pycocoevalcap.bleu.bleu_scorer import BleuScorer
        from pycocoevalcap.cider.cider_scorer import CiderScorer

        if self._cooked is None:
            self._cooked = self._cook()
        bleu = BleuScorer(n=4)
        crefs, ctest = self._cooked["bleu"]
        bleu.crefs, bleu.ctest = [crefs[i] for i in idx], [ctest[i] for i in idx]
        values, _ = bleu.compute_score(option="closest", verbose=0)
        out = {f"bleu_{n + 1}": float(values[n]) for n in range(4)}
        if self.scorer.meteor is not None:
            if self.meteor_stats is None:
                stats = self.scorer.meteor_statistics(dict(enumerate(self.gts)), dict(enumerate(self.res)))
                self.meteor_stats = [stats[i] for i in range(len(self.gts))]
            out["meteor"] = self.scorer.meteor_from_statistics([self.meteor_stats[i] for i in idx])
        out["rouge_l"] = float(np.mean(self._cooked["rouge_l"][idx]))
        if self._cooked["cider_fast"] is not None:
            out["cider"] = self._cooked["cider_fast"].score(np.asarray(idx))
        else:
            cider = CiderScorer(n=4, sigma=6.0)
            crefs, ctest = self._cooked["cider"]
            cider.crefs, cider.ctest = [crefs[i] for i in idx], [ctest[i] for i in idx]
            out["cider"] = float(cider.compute_score()[0])
        return out


@dataclass
class CeBlock:
    """Clinical efficacy from crrg's labeler, under one convention (``crrg`` or ``chexbert``)."""

    pred_labels: list[dict]
    ref_labels: list[dict]
    convention: str = "crrg"

    def score(self, idx: np.ndarray) -> dict:
        from crrg.evaluation.clinical import ce_from_labels

        return ce_from_labels([self.pred_labels[i] for i in idx], [self.ref_labels[i] for i in idx], self.convention)


@dataclass
class LabelF1Block:
    """The four CheXbert-F1 flavours of binarised ``(N, 14)`` label matrices."""

    pred: np.ndarray
    ref: np.ndarray
    prefix: str = "chexbert"

    def score(self, idx: np.ndarray) -> dict:
        from crrg.evaluation.label_f1 import label_f1_scores

        return label_f1_scores(self.pred[idx], self.ref[idx], self.prefix)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values))


@dataclass
class PerSampleBlock:
    """Per-study scores; each metric is the mean over studies unless ``aggregates`` says otherwise.

    ``aggregates`` maps an output name to ``(source metric, function of its per-study values)``.
    """

    values: Mapping[str, np.ndarray]
    aggregates: Mapping[str, tuple[str, Callable[[np.ndarray], float]]] = field(default_factory=dict)

    def score(self, idx: np.ndarray) -> dict:
        out = {}
        for name, vals in self.values.items():
            out[name] = _mean(np.asarray(vals, dtype=float)[idx])
        for name, (source, fn) in self.aggregates.items():
            out[name] = float(fn(np.asarray(self.values[source], dtype=float)[idx]))
        return out


def score_all(blocks: Sequence[MetricBlock], idx: np.ndarray) -> dict:
    """Every block's metrics on ``idx``, merged."""
    out: dict = {}
    for block in blocks:
        out.update(block.score(idx))
    return out
