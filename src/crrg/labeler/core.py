"""The rule-based CheXpert-style labeler: mentions, then negation / uncertainty, then aggregation.

For every clause of every sentence, each observation's mentions are found (:mod:`phrases`) and
classified as positive (1), negative (0) or uncertain (-1) from the cues around them
(:mod:`negation`, :mod:`uncertainty`). A report's label for an observation aggregates its mentions
as CheXpert does: any positive gives 1, else any uncertain gives -1, else any negative gives 0,
and no mention gives ``None``. "No Finding" is 1 when no mention other than Support Devices is
positive or uncertain, counting the 12 pathologies and the other abnormal findings of
:data:`phrases.OTHER_FINDINGS` (as the CheXpert labeler does); otherwise ``None`` (never 0).

Everything is compiled regular expressions over short clauses, so labelling runs at thousands of
reports per second on one core, with no model and no download.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from crrg.labeler.clauses import report_sentences, split_clauses
from crrg.labeler.negation import is_negated, mask_double_negation
from crrg.labeler.phrases import OTHER_FINDINGS, PHRASES, SubjectRule
from crrg.labeler.uncertainty import is_certainly_uncertain, is_uncertain
from crrg.observations import CHEXPERT_14, NEGATIVE, POSITIVE, UNCERTAIN

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"


@dataclass(frozen=True)
class Mention:
    """One mention of an observation: where it is and what the cues made of it."""

    observation: str
    text: str
    sentence: int
    value: int


@dataclass(frozen=True)
class _CompiledSubject:
    after: re.Pattern
    before: re.Pattern


@dataclass(frozen=True)
class _Compiled:
    findings: re.Pattern | None
    unmentions: re.Pattern | None
    subjects: tuple[_CompiledSubject, ...]


def _compile_subject(rule: SubjectRule) -> _CompiledSubject:
    groups = []
    if rule.uncertain:
        groups.append(f"(?P<u>{rule.uncertain})")
    groups.append(f"(?P<a>{rule.abnormal})")
    if rule.normal:
        groups.append(f"(?P<n>{rule.normal})")
    qualifier = "|".join(groups)
    after = re.compile(rf"\b(?:{rule.subject})\b(?P<gap>(?:[^.;]{{0,60}}?)\b)(?:{qualifier})")
    before = re.compile(rf"\b(?:{qualifier})\b\s+(?:[a-z\-]+\s+){{0,2}}?(?:{rule.subject})\b")
    return _CompiledSubject(after=after, before=before)


@lru_cache(maxsize=1)
def _compiled() -> dict[str, _Compiled]:
    out = {}
    for name, phrases in PHRASES.items():
        out[name] = _Compiled(
            findings=re.compile(r"\b(?:" + "|".join(phrases.findings) + ")") if phrases.findings else None,
            unmentions=re.compile(r"\b(?:" + "|".join(phrases.unmentions) + ")") if phrases.unmentions else None,
            subjects=tuple(_compile_subject(r) for r in phrases.subjects),
        )
    out[NO_FINDING] = _Compiled(findings=re.compile(r"\b(?:" + "|".join(OTHER_FINDINGS) + ")"), unmentions=None, subjects=())
    return out


def _classify(clause: str, start: int, end: int) -> int:
    before, after = clause[:start], clause[end:]
    if is_certainly_uncertain(before, after):
        return UNCERTAIN
    if is_negated(before, after):
        return NEGATIVE
    if is_uncertain(before, after):
        return UNCERTAIN
    return POSITIVE


def _inside(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(s <= start and end <= e for s, e in spans)


def _clause_mentions(rules: _Compiled, clause: str) -> Iterable[tuple[str, int]]:
    spans: list[tuple[int, int]] | None = None  # unmention spans, computed only once a mention is seen

    def unmentioned(start: int, end: int) -> bool:
        nonlocal spans
        if spans is None:
            spans = [m.span() for m in rules.unmentions.finditer(clause)] if rules.unmentions else []
        return _inside(spans, start, end)

    if rules.findings is not None:
        for m in rules.findings.finditer(clause):
            if not unmentioned(m.start(), m.end()):
                yield m.group(0), _classify(clause, m.start(), m.end())
    for subject in rules.subjects:
        for pattern in (subject.after, subject.before):
            for m in pattern.finditer(clause):
                if unmentioned(m.start(), m.end()):
                    continue
                if m.group("a") is not None:
                    # negation cues may sit before the subject or between it and the qualifier
                    gap = m.groupdict().get("gap") or ""
                    value = _classify(clause, m.start(), m.end())
                    if value == POSITIVE and gap and is_negated(gap, ""):
                        value = NEGATIVE
                elif m.groupdict().get("u") is not None:
                    value = NEGATIVE if is_negated(clause[:m.start()], "") else UNCERTAIN
                else:
                    value = NEGATIVE
                yield m.group(0), value


@lru_cache(maxsize=1 << 16)
def sentence_mentions(sentence: str) -> tuple[tuple[str, str, int], ...]:
    """``(observation, mention text, value)`` of one lower-cased sentence.

    Cached: report corpora repeat the same sentences ("No pneumothorax.") thousands of times, and
    a sentence's mentions do not depend on its neighbours.
    """
    found = []
    for clause in split_clauses(sentence):
        clause = mask_double_negation(clause)
        for name, rules in _compiled().items():
            for mention_text, value in _clause_mentions(rules, clause):
                found.append((name, mention_text, value))
    return tuple(found)


def find_mentions(text: str) -> list[Mention]:
    """All mentions in a report with their values; useful to see why a label came out as it did."""
    return [Mention(name, mention_text, index, value)
            for index, sentence in enumerate(report_sentences(text))
            for name, mention_text, value in sentence_mentions(sentence)]


def aggregate(mentions: Iterable[Mention]) -> dict[str, int | None]:
    """Combine mentions into report labels with CheXpert's precedence (1 > -1 > 0 > None)."""
    labels: dict[str, int | None] = {name: None for name in CHEXPERT_14}
    finding = False
    rank = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}
    for m in mentions:
        if m.observation != SUPPORT_DEVICES and m.value in (POSITIVE, UNCERTAIN):
            finding = True
        if m.observation == NO_FINDING:
            continue
        current = labels[m.observation]
        if current is None or rank[m.value] > rank[current]:
            labels[m.observation] = m.value
    labels[NO_FINDING] = None if finding else POSITIVE
    return labels


def label_report(text: str | None) -> dict[str, int | None]:
    """CheXpert-14 labels of one report: ``{observation: 1 | 0 | -1 | None}`` in CHEXPERT_14 order.

    An empty report says nothing, so every label (No Finding included) is ``None``.
    """
    if not text or not text.strip():
        return {name: None for name in CHEXPERT_14}
    return aggregate(find_mentions(text))


def label_reports(texts: Iterable[str | None]) -> list[dict[str, int | None]]:
    return [label_report(t) for t in texts]
