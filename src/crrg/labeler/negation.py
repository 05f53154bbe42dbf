"""Negation cues and their scope.

A negation cue before a mention ("no", "without", "free of", "negative for", "resolution of")
negates it when nothing ends the cue's scope in between; the scope runs to the end of the clause
and over a list of findings ("no effusion, pneumothorax or consolidation"), but stops at a
contrast ("but", "however") or at a new statement ("..., there is a small effusion"; see
:mod:`crrg.labeler.clauses`). Cues after a mention ("... is not seen", "... has resolved") negate
it within its clause.

Double negation: "no change in the small effusion", "no interval increase in cardiomegaly" and
"not significantly changed" describe a finding that is still there. Those phrases are masked
before cues are searched, so they neither negate nor count as cues.
"""

from __future__ import annotations

import re

DOUBLE_NEGATION = re.compile(
    r"\b(?:no|not|without|nor) (?:\w+ ){0,2}?(?:change|changes|changed|increase|increased|worsening|worsened|progression|"
    r"progressed|improvement|improved|decrease|decreased|growth|difference|enlargement of the (?=effusion))\b"
    r"|\bnot (?:significantly |substantially |appreciably )?(?:changed|increased|improved|decreased|different)\b"
    r"|\bno (?:longer )?(?:significant|appreciable) (?:interval )?(?=change)"
)

PRE_NEGATION = re.compile(
    r"\b(?:no|not|without|nor|never|none)\b"
    r"|\bfree of\b|\bnegative for\b|\babsen(?:ce|t) of\b|\bclear of\b|\bclearing of\b"
    r"|\bresolution of\b|\bresolved\b|\binterval removal of\b|\bremoval of\b|\bremoved\b"
    r"|\brather than\b|\binstead of\b|\bruled out\b|\bexcludes?\b|\bexcluded\b"
    r"|\bnormal\b(?! (?:limits|\w+ limits))|\bclear\b(?= of)"
    r"|\bunremarkable\b"
)

POST_NEGATION = re.compile(
    r"^[^.;]{0,40}?\b(?:"
    r"(?:is|are|was|were|has been|have been)? ?(?:not|no longer) (?:\w+ )?(?:seen|identified|present|visualized|visualised|"
    r"evident|appreciated|demonstrated|noted|detected|apparent|observed|shown|enlarged|widened|definitely seen|included)"
    r"|absent|(?:has|have)? ?(?:since )?(?:resolved|cleared|disappeared)|is negative|are negative"
    r"|(?:has|have)? ?been removed|(?:is|are|appears?|remains?) (?:within normal limits|normal|unremarkable)"
    r")\b"
)


def mask_double_negation(clause: str) -> str:
    """Replace "no change in ..."-style phrases with spaces of the same length (offsets stay valid)."""
    return DOUBLE_NEGATION.sub(lambda m: " " * len(m.group(0)), clause)


def is_negated(before: str, after: str) -> bool:
    """Whether a mention with ``before``/``after`` clause context (already scoped) is negated."""
    return PRE_NEGATION.search(before) is not None or POST_NEGATION.search(after) is not None
