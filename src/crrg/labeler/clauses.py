"""Sentences and clauses: the units negation and uncertainty cues act within.

A cue's scope ends at the end of its clause. Clauses end at ";" and ":", at contrasts ("but",
"however", "although", "except", "other than") and where a comma or "and" starts a new statement:
"no pneumothorax, there is a small effusion" is two clauses, while the list in "no pneumothorax,
effusion, or consolidation" stays one, so "no" covers all three findings.
"""

from __future__ import annotations

import re

from crrg.text.sentences import split_sentences

_CONTRAST = re.compile(
    r"\s*[;:]\s*|\s+(?:but|however|although|though|whereas|except|aside from|apart from|other than|"
    r"with the exception of|which|that is|otherwise)\b[\s,]*|,\s*(?:but|however|although|though|which)\b[\s,]*"
)
_VERB = r"(?:is|are|was|were|has|have|had|appear|appears|appeared|remain|remains|demonstrates?|measures?|shows?|seen|noted)"
# Words that open a new statement after a comma; adjectives ("large", "small") do not, because
# negated lists use them: "no consolidation, large effusion, or pneumothorax".
_STARTER = r"(?:the|there|this|these|it|a|an|again|also|now|otherwise)"
_NEW_STATEMENT = re.compile(
    rf",\s*(?=(?!(?:or|nor|and)\b){_STARTER}\b|(?!(?:or|nor|and)\b)(?:[a-z\-/]+\s+){{1,3}}{_VERB}\b)"
    rf"|\s+and\s+(?=(?:the|there|this|these|a|an)\b)"
)


def report_sentences(text: str) -> list[str]:
    """Lower-cased sentences of a report.

    No full :func:`crrg.text.clean_report` here: "XXXX" tokens match no phrase and cut no scope, and
    the splitter already drops list numbering, so the labeler skips that cost.
    """
    return [" ".join(s.lower().split()) for s in split_sentences(text)]


def split_clauses(sentence: str) -> list[str]:
    """Split one lower-cased sentence into clauses (see module docstring)."""
    clauses = []
    for part in _CONTRAST.split(sentence):
        clauses.extend(p for p in _NEW_STATEMENT.split(part) if p and p.strip())
    return clauses
