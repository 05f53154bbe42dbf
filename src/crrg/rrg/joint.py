"""Generation-classification joint design: the classifier steers the writer and checks what it wrote.

Four couplings, each measurable on/off (``benchmarks/bench_rrg.py --joint``):

* **condition**: the 14 finding probabilities (the rrg model's own finding head, or an external CLIP
  classifier attached with :func:`attach_classifier`) become one extra GPT-2 prefix token, so a
  sentence about the cardiac silhouette knows whether the study has cardiomegaly.
* **rerank**: several candidate sentences per region (beam search or sampling) are re-ranked by how
  well their CheXpert labels (``crrg.labeler``) agree with the classifier's probabilities and with
  the region's abnormality score.
* **check**: :func:`consistency` compares the generated report's labels with the classifier's
  decisions, to measure (and log) where the two modules disagree.
* **filter** (conditioning plus a veto): every generated sentence, of FINDINGS and IMPRESSION, is
  labelled and dropped when it contradicts the classifier's decision on a finding
  (:func:`consistent_sentences`); an IMPRESSION left empty is rewritten from what remains.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import torch

from crrg.observations import CHEXPERT_14
from crrg.reporting import StudyInput

log = logging.getLogger(__name__)
# Findings that are not abnormalities of a region; a sentence saying them is not "abnormal".
NOT_ABNORMAL = {"No Finding", "Support Devices"}


class FindingSource(Protocol):
    """Anything that gives CheXpert-14 probabilities for a study (e.g. the CLIP classifier)."""

    def predict_proba(self, study: StudyInput) -> dict[str, float]: ...


def attach_classifier(rrg_model, classifier, context: bool = True) -> None:
    """Use ``classifier`` instead of the rrg model's own finding head (None detaches it).

    An ``nn.Module`` (the CLIP classifier, or one wrapped in :class:`ImageClassifierFindings`) becomes
    the model's ``finding_classifier`` child, frozen and in eval mode; with ``context`` and a model that
    has region context, it is also its ``context_encoder`` (as in crrg-default: one module, two roles).
    Anything else with ``predict_proba`` (a stand-in, a remote service) is kept as a plain source."""
    from torch import nn

    module = getattr(classifier, "classifier", classifier)
    if classifier is None or isinstance(module, nn.Module):
        rrg_model._plain_source = None
        if module is not None:
            module.requires_grad_(False).eval()
        rrg_model.finding_classifier = module
        if context and rrg_model.context is not None:
            rrg_model.context_encoder = module
        return
    rrg_model.finding_classifier = None
    rrg_model._plain_source = classifier
    if context and rrg_model.context is not None and hasattr(module, "image_encoder"):
        rrg_model.context_encoder = module


def as_finding_source(module: Any) -> FindingSource:
    """A classifier module -> :class:`FindingSource` (itself when it has ``predict_proba``)."""
    if hasattr(module, "predict_proba"):
        return module
    if hasattr(module, "probabilities") and hasattr(module, "labels"):
        return ImageClassifierFindings(module)
    from crrg.errors import InputError

    raise InputError(f"{type(module).__name__} gives no finding probabilities (it needs predict_proba, or "
                     "probabilities and labels)")


class ImageClassifierFindings:
    """Adapter for the CLIP-based image classifier (``crrg.clip.classifier``, family ``classifier``)."""

    def __init__(self, classifier: Any):
        self.classifier = classifier

    @property
    def thresholds(self) -> dict[str, float]:
        """The classifier's own decision thresholds (chosen on its val split), not the rrg head's."""
        return dict(getattr(self.classifier, "thresholds", None) or {})

    def predict_proba(self, study: StudyInput) -> dict[str, float]:
        frontal = study.images[study.frontal_index(required=False)]
        row = self.classifier.probabilities([frontal])[0]
        return {name: float(p) for name, p in zip(self.classifier.labels, row)}


def load_finding_source(path: str) -> FindingSource:
    """A saved classifier folder -> :class:`FindingSource` for :func:`attach_classifier`."""
    from crrg.models.registry import load_pretrained

    return as_finding_source(load_pretrained(path))


def merge_external(source: Any, study: StudyInput, own_probs: torch.Tensor,
                   own_thresholds: dict[str, float] | None) -> tuple[torch.Tensor, dict[str, float]]:
    """Finding probabilities and thresholds with an external classifier in charge of the labels it
    gives, each decided at the classifier's own threshold (``source.thresholds``, 0.5 when it has
    none); the rrg finding head keeps the labels the classifier does not know (a CLIP classifier
    trained on ten findings says nothing about Lung Opacity, which must not read as "absent")."""
    given = source.predict_proba(study)
    theirs = dict(getattr(source, "thresholds", None) or {})
    probs = own_probs.clone().float()
    thresholds = {name: float((own_thresholds or {}).get(name, 0.5)) for name in CHEXPERT_14}
    for j, name in enumerate(CHEXPERT_14):
        if name in given:
            probs[j] = float(given[name])
            thresholds[name] = float(theirs.get(name, 0.5))
    return probs, thresholds


def _label(text: str) -> dict[str, int | None]:
    from crrg.labeler import label_report

    return label_report(text)


def agreement(labels: dict[str, int | None], finding_probs: torch.Tensor | list[float], abnormal_prob: float) -> float:
    """Log-likelihood of a sentence's stated findings under the classifier (higher = more consistent).

    Only what the sentence states counts: a positive mention scores log p, a negated one log(1 - p);
    whether the sentence states *any* abnormality is scored against the region's abnormality probability.
    """
    eps = 1e-4
    probs = [float(p) for p in finding_probs]
    score = 0.0
    stated_abnormal = False
    for name, p in zip(CHEXPERT_14, probs):
        value = labels.get(name)
        if value in (1, -1):
            score += math.log(max(p, eps))
            stated_abnormal |= name not in NOT_ABNORMAL
        elif value == 0:
            score += math.log(max(1 - p, eps))
    a = min(max(abnormal_prob, eps), 1 - eps)
    score += math.log(a) if stated_abnormal else math.log(1 - a)
    return score


def rerank(candidates: list[str], finding_probs, abnormal_prob: float, thresholds=None, prior: float = 0.3) -> str:
    """The candidate that best agrees with the classifier; ties (and the decoder's own order) break by rank.

    ``prior`` is a small per-rank penalty so that the decoder's preference still counts.
    """
    candidates = [c for c in candidates if c.strip()] or candidates
    best, best_score = candidates[0], -math.inf
    for rank, text in enumerate(candidates):
        score = agreement(_label(text), finding_probs, abnormal_prob) - prior * rank
        if score > best_score:
            best, best_score = text, score
    return best


def consistency(report_text: str, finding_probs: dict[str, float], thresholds: dict[str, float] | None = None,
                names: tuple[str, ...] = CHEXPERT_14) -> dict[str, Any]:
    """Where the report's labels and the classifier's decisions disagree (uncertain counts as positive)."""
    labels = _label(report_text)
    disagree = []
    for name in names:
        if name == "No Finding":
            continue
        said = labels.get(name) in (1, -1)
        predicted = finding_probs.get(name, 0.0) >= (thresholds or {}).get(name, 0.5)
        if said != predicted:
            disagree.append(name)
    checked = len([n for n in names if n != "No Finding"])
    return {"agreement": 1 - len(disagree) / checked, "disagreements": disagree}


def contradicts(labels: dict[str, int | None], decisions: dict[str, bool]) -> list[str]:
    """The findings on which one sentence's labels contradict the classifier's present/absent decisions.

    A positive or uncertain mention (1 / -1) of a finding the classifier calls absent contradicts it, and
    so does a negated mention (0) of a finding it calls present. "No Finding" counts only for a sentence
    that states nothing else ("The lungs are clear."): the labeler also sets it beside every negation,
    where it says nothing the other labels do not. ``labels`` are a non-empty sentence's: one that
    states an abnormality outside the 14 (a granuloma, emphysema: nothing positive, yet no "No
    Finding", the CheXpert convention) contradicts a study the classifier calls normal.
    """
    found = []
    stated = {name: labels.get(name) for name in CHEXPERT_14 if labels.get(name) is not None}
    other_abnormality = labels.get("No Finding") is None and not any(
        v in (1, -1) for name, v in stated.items() if name not in NOT_ABNORMAL)
    if other_abnormality and decisions.get("No Finding"):
        found.append("No Finding")
    for name, value in stated.items():
        if name not in decisions:
            continue
        if name == "No Finding" and (set(stated) != {"No Finding"} or value != 1):
            continue
        if (value in (1, -1) and not decisions[name]) or (value == 0 and decisions[name]):
            found.append(name)
    return found


def finding_decisions(finding_probs, thresholds: dict[str, float] | None) -> dict[str, bool]:
    """Present/absent per CheXpert-14 finding from probabilities (tensor, list or dict) and per-finding
    thresholds (those chosen on val, ``thresholds.json``; 0.5 where none was chosen)."""
    if isinstance(finding_probs, dict):
        probs = {name: float(finding_probs.get(name, 0.0)) for name in CHEXPERT_14}
    else:
        probs = {name: float(p) for name, p in zip(CHEXPERT_14, finding_probs)}
    return {name: p >= (thresholds or {}).get(name, 0.5) for name, p in probs.items()}


def consistent_sentences(texts: list[str], decisions: dict[str, bool],
                         local: list[bool] | None = None) -> list[bool]:
    """Which sentences to keep: those whose labels contradict none of the classifier's decisions.

    This is the "filter" joint mode: the finding head, which sees all regions at once and whose
    thresholds were chosen on val, vetoes what a single region's sentence claims. Two sentences of one
    report that contradict each other ("No pleural effusion." / "Small pleural effusions.") cannot both
    survive, because the head decides the finding one way.

    ``local[i]`` marks a sentence about one region that looks normal: its "No Finding" ("No acute
    osseous abnormality." from the spine) says that region is normal, not the study, so a study the
    head calls abnormal does not veto it (the whole-study sentences and the IMPRESSION are still judged).
    """
    keep = []
    regional = {name: v for name, v in decisions.items() if name != "No Finding"}
    for i, text in enumerate(texts):
        if not text.strip():
            keep.append(True)
            continue
        bad = contradicts(_label(text), regional if local is not None and local[i] else decisions)
        if bad:
            log.debug("joint filter drops %r (contradicts the classifier on %s)", text, ", ".join(bad))
        keep.append(not bad)
    return keep


def positive_claims(text: str) -> set[str]:
    """The CheXpert observations ``text`` states as present or possible (devices included)."""
    return {name for name, value in _label(text).items() if value in (1, -1) and name != "No Finding"}


def agreeing_impression(candidates: list[str], findings: list[str]) -> str:
    """The IMPRESSION candidate (beam order) whose stated findings best match what the FINDINGS state.

    A decoder that sums up the abnormal regions can lose one of them or raise one the FINDINGS never
    mention; among its beam candidates the one that restates the FINDINGS (F1 of the observations
    each states, the earlier beam on a tie) is the consistent report. With nothing positive in the
    FINDINGS, the candidate that states the least wins.
    """
    if not candidates:
        raise ValueError("no impression candidates")
    stated = set().union(*(positive_claims(t) for t in findings)) if findings else set()

    def f1(text: str) -> float:
        claims = positive_claims(text)
        if not stated:
            return -len(claims)
        return 2 * len(claims & stated) / (len(claims) + len(stated))

    scores = [f1(t) for t in candidates]
    return candidates[max(range(len(candidates)), key=lambda i: (scores[i], -i))]
