"""Sentences and clauses: the units negation and uncertainty cues act within.

A cue's scope ends at the end of its clause. Clauses end at ";" and ":", at contrasts ("but",
"however", "although", "except", "other than") and where a comma or "and" starts a new statement:
"no pneumothorax, there is a small effusion" is two clauses, while the list in "no pneumothorax,
effusion, or consolidation" stays one, so "no" covers all three findings.
"""

from __future__ import annotations

import re

from crrg.text.clean import clean_report
from crrg.text.sentences import split_sentences

_CONTRAST = re.compile(
    r"\s*[;:]\s*|\s+(?:but|however|although|though|whereas|except|aside from|apart from|other than|"
    r"with the exception of|which|that is|otherwise)\b[\s,]*|,\s*(?:but|however|although|though|which)\b[\s,]*"
)
_VERB = r"(?:is|are|was|were|has|have|had|appear|appears|appeared|remain|remains|demonstrates?|measures?|shows?|seen|noted)"
_STARTER = r"(?:the|there|this|these|a|an|mild|mildly|moderate|moderately|severe|small|large|stable|unchanged|persistent|new|again|also|interval|now|left|right|bilateral|minimal|trace|slight|chronic)"
_NEW_STATEMENT = re.compile(
    rf",\s*(?=(?!(?:or|nor|and)\b){_STARTER}\b|(?!(?:or|nor|and)\b)(?:[a-z\-/]+\s+){{1,3}}{_VERB}\b)"
    rf"|\s+and\s+(?=(?:the|there|this|these|a|an)\b)"
)


def report_sentences(text: str) -> list[str]:
    """Lower-cased, cleaned sentences of a report (de-identification tokens removed)."""
    return [s.lower() for s in split_sentences(clean_report(text))]


def split_clauses(sentence: str) -> list[str]:
    """Split one lower-cased sentence into clauses (see module docstring)."""
    clauses = []
    for part in _CONTRAST.split(sentence):
        clauses.extend(p for p in _NEW_STATEMENT.split(part) if p and p.strip())
    return clauses
