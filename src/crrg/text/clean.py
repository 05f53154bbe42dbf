"""Cleaning of free-text radiology reports before training, labelling or display.

Reports come with artefacts that carry no clinical meaning but change every downstream number: the
``XXXX`` tokens IU X-Ray's de-identifier left in place of names, dates and (over-eagerly) ordinary
words, list numbering ("1.", "2)"), ragged whitespace and repeated punctuation. :func:`clean_report`
removes them and keeps the text readable; it never changes case or wording otherwise, so the output
is still a report a radiologist would recognise.
"""

from __future__ import annotations

import re
import unicodedata

DEID_TOKEN = "XXXX"

# "chest x-XXXX" is by far the most common de-identified word in IU X-Ray and is always "x-ray".
_XRAY = re.compile(r"\b(x)\s*-\s*XXXX\b", re.IGNORECASE)
# A run of de-identification tokens, possibly joined by spaces, commas, hyphens or slashes.
_DEID_RUN = re.compile(r"\bX{3,}(?:[\s,/\-]+X{3,})*\b")
# After a run is removed, a title or function word left directly before a verb, punctuation or the
# end of the text dangles ("Dr. was notified", "The are intact", "Comparison to."); drop it.
_DANGLING = re.compile(
    r"\b(?:dr|mr|mrs|ms|the|a|an|of|on|at|to|from|dated|by|with|in)\.?[ \t]+(?=\x00(?:\s*\x00)*"
    r"\s*(?:[.,;:!?)]|$|(?:are|is|was|were|appear|appears)\b))",
    re.IGNORECASE,
)
# "1." / "2)" / "(3)" / "a." at the start of a line or after a sentence end introduce list items.
_NUMBERING = re.compile(r"(^|(?<=[\n.;:!?])|(?<=^\s))[ \t]*(?:\(?\d{1,2}[.)]|\(?[a-h]\))(?=[ \t]+\S|\S)(?!\d)", re.MULTILINE)
_HAS_NUMBERING = re.compile(r"\d[.)]|\b[a-h]\)")
_REPEATED_PUNCT = re.compile(r"([.,;:!?])(?:\s*\1)+")
_PUNCT_AFTER_COMMA = re.compile(r",\s*([.;:!?])")
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+([.,;:!?)])")
_SPACE_AFTER_OPEN = re.compile(r"\([ \t]+")
_EMPTY_PARENS = re.compile(r"\(\s*\)")
_LEADING_PUNCT = re.compile(r"(^|(?<=[.!?]\s))[,;:]\s*", re.MULTILINE)
_SPACES = re.compile(r"[ \t\u00a0]+")
_NEWLINES = re.compile(r"\s*\n\s*")


def remove_deid_tokens(text: str, replacement: str | None = None) -> str:
    """Remove (or replace) IU X-Ray ``XXXX`` runs, keeping the surrounding grammar readable.

    With ``replacement`` given, each run becomes that token instead (e.g. ``"<unk>"`` for models
    that should see that a word was there).
    """
    if "xxx" not in text.lower():
        return text
    text = _XRAY.sub(lambda m: m.group(1) + "-ray", text)
    if replacement is not None:
        return _DEID_RUN.sub(replacement, text)
    marked = _DEID_RUN.sub("\x00", text)
    # drop words that only made sense with the removed word (twice: "on XXXX at XXXX"), then the markers
    for _ in range(2):
        marked = _DANGLING.sub("", marked)
    return marked.replace("\x00", "")


def normalize_whitespace(text: str) -> str:
    """Collapse runs of spaces and tabs, keep single newlines (paragraphs often carry structure)."""
    text = _SPACES.sub(" ", text)
    text = _NEWLINES.sub("\n", text)
    return text.strip()


def remove_numbering(text: str) -> str:
    """Drop list numbering such as "1." or "2)" that starts a line or follows a sentence end."""
    if _HAS_NUMBERING.search(text) is None:
        return text
    return _NUMBERING.sub(lambda m: m.group(1), text)


def tidy_punctuation(text: str) -> str:
    """Collapse repeated punctuation and the spacing defects that removals leave behind."""
    text = _EMPTY_PARENS.sub("", text)
    text = _SPACE_AFTER_OPEN.sub("(", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _PUNCT_AFTER_COMMA.sub(r"\1", text)
    text = _REPEATED_PUNCT.sub(r"\1", text)
    text = _LEADING_PUNCT.sub("", text)
    return text


def _capitalise_sentences(text: str) -> str:
    return re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def clean_report(text: str | None, deid_replacement: str | None = None, keep_newlines: bool = False) -> str:
    """Return a readable, artefact-free version of a report.

    Steps, in order: Unicode NFKC; ``XXXX`` de-identification runs removed (or replaced by
    ``deid_replacement``); list numbering removed; repeated punctuation collapsed and spacing around
    punctuation fixed; whitespace collapsed (newlines become spaces unless ``keep_newlines``); a
    sentence that now starts in lower case because its first word was removed is capitalised.
    Wording and case are otherwise left alone.
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = remove_deid_tokens(text, deid_replacement)
    text = remove_numbering(text)
    text = normalize_whitespace(text)
    if not keep_newlines:
        text = text.replace("\n", " ")
    text = tidy_punctuation(text)
    text = normalize_whitespace(text)
    if deid_replacement is None:
        text = _capitalise_sentences(text)
    return text
