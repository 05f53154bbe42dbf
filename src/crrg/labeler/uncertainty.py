"""Uncertainty cues: hedges that make a mention uncertain (-1) instead of positive.

Following CheXpert, "likely", "probable" and "suggestive of" are uncertain, and so is a finding
offered as an alternative ("atelectasis versus pneumonia", "atelectasis or infiltrate"). A few
phrases are uncertain even though they contain a negation ("cannot be excluded", "not ruled out");
they are checked before negation (:data:`POST_UNCERTAINTY`, :data:`NEGATED_UNCERTAINTY`).
"""

from __future__ import annotations

import re

# Uncertainty that wins over negation: "pneumonia cannot be excluded", "cannot exclude effusion".
NEGATED_UNCERTAINTY = re.compile(
    r"\b(?:cannot|can not|can't|could not|may not|not) (?:be )?(?:entirely |completely |totally |definitely |fully )?"
    r"(?:excluded|exclude|ruled out|rule out|be excluded)\b"
    r"|\bdifficult to (?:exclude|rule out)\b|\bnot (?:entirely |definitely )?excluded\b"
)

PRE_UNCERTAINTY = re.compile(
    r"\b(?:may|might|could|would|possibl[ey]|probabl[ey]|likely|unlikely|presum\w*|suggest\w*|suspicious|suspect\w*|"
    r"concern(?:ing)? (?:for|of)|worrisome|question(?:able|ably)?|equivocal|indeterminate|uncertain|"
    r"differential|versus|vs|rule out|r/o|evaluate for|assess for|to exclude|consider\w*|"
    r"represent\w*|compatible with|cannot exclude|borderline|apparent|apparently)\b"
    r"|\?"
)

POST_UNCERTAINTY = re.compile(
    r"^[^.;]{0,40}?(?:\b(?:is|are) (?:\w+ )?(?:possible|suspected|likely|questioned|not excluded|difficult to exclude|"
    r"a consideration|considered)\b|\bversus\b|\bvs\b|\bor (?:\w+ ){0,2}(?:atelectasis|pneumonia|infection|infiltrate|scarring|"
    r"consolidation|edema|effusion|aspiration|mass|scar|fibrosis)\b|\?)"
)


def is_certainly_uncertain(before: str, after: str) -> bool:
    """Uncertainty that overrides negation ("cannot be excluded") around a mention."""
    return NEGATED_UNCERTAINTY.search(after[:80]) is not None or NEGATED_UNCERTAINTY.search(before) is not None


def is_uncertain(before: str, after: str) -> bool:
    return PRE_UNCERTAINTY.search(before) is not None or POST_UNCERTAINTY.search(after) is not None
