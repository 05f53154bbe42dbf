"""Sentence splitting for radiology reports.

General-purpose splitters stumble on report language: decimals ("2.5 cm"), abbreviations ("Dr.",
"e.g.", "approx."), vertebral levels ("T12."), and numbered lists written on one line ("1. No
effusion. 2. Cardiomegaly."). Region-guided generation needs one finding per sentence, so the
splitter is written for these cases; it works on lower-cased text too (R2Gen-style corpora).
"""

from __future__ import annotations

import re

# Words that end in a period without ending a sentence (compared lower-cased, without the period).
ABBREVIATIONS = frozenset(
    {
        "dr", "mr", "mrs", "ms", "prof", "st", "vs", "approx", "appr", "e.g", "i.e", "eg", "ie", "etc.",
        "cf", "fig", "no", "nos", "ca", "cm", "mm", "incl", "resp", "min", "max", "ap", "pa", "lat",
        "a.m", "p.m", "b/l", "hx", "h/o", "s/p", "yo", "y.o", "sr", "jr", "al", "et al", "ant", "post",
        "sup", "inf", "med", "rt", "lt",
    }
)
# Abbreviations that may well end a sentence ("... at 9 a.m. The ..."), so they do not block a split
# when a capitalised word follows.
_SOFT_ABBREVIATIONS = frozenset({"cm", "mm", "a.m", "p.m", "etc.", "ap", "pa", "lat", "min", "max", "no"})

# Candidate boundaries: sentence-final punctuation followed by whitespace, or a newline.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_LIST_MARKER = re.compile(r"^\s*(?:\(?\d{1,2}[.)]|\(?[a-h]\)|[-*\u2022])\s+")
_LAST_WORD = re.compile(r"(\S+)\.[\"')\]]*$")
_LIST_NUMBER = re.compile(r"\d{1,2}")
_SINGLE_LETTER = re.compile(r"[a-z]|(?:[a-z]\.)+[a-z]")
_BARE_MARKER = re.compile(r"\(?\d{1,2}[.)]?")


def _blocks_split(left: str, right: str) -> bool:
    """True when the period ending ``left`` does not end a sentence given what follows."""
    if not left.endswith("."):
        return False
    m = _LAST_WORD.search(left)
    if m is None:
        return False
    word = m.group(1).lower().lstrip("(\"'")
    # a lone list number ("1.") is a list marker, not the end of a sentence: the split happens before it
    if _LIST_NUMBER.fullmatch(word):
        return True
    if word in ABBREVIATIONS or word + "." in ABBREVIATIONS:
        if word in _SOFT_ABBREVIATIONS and right[:1].isupper():
            return False
        return True
    # single letters ("T.", initials) and dotted abbreviations ("e.g.", "i.v.")
    if _SINGLE_LETTER.fullmatch(word):
        return True
    return False


def split_sentences(text: str | None) -> list[str]:
    """Split a report into sentences, stripped, with list markers ("1.", "2)", "-") removed.

    A split happens after ".", "!" or "?" followed by whitespace, and at newlines; it does not
    happen inside decimals (no whitespace follows), after known abbreviations, single letters or
    a list number. Empty sentences are dropped.
    """
    if not text:
        return []
    pieces: list[str] = []
    pos = 0
    current = ""
    for m in _BOUNDARY.finditer(text):
        chunk = text[pos:m.start()]
        pos = m.end()
        current = f"{current} {chunk}" if current else chunk
        is_newline = "\n" in m.group(0) and not m.group(0).strip(" \t\r\n\"')]") and text[m.start() - 1:m.start()] not in ".!?"
        if not is_newline and _blocks_split(current, text[pos:pos + 1]):
            continue
        pieces.append(current)
        current = ""
    tail = text[pos:]
    current = f"{current} {tail}" if current else tail
    pieces.append(current)
    sentences = []
    for piece in pieces:
        piece = _LIST_MARKER.sub("", piece.strip()).strip()
        # a piece that is only a list number ("1.") left over from a one-line list
        if piece and not _BARE_MARKER.fullmatch(piece):
            sentences.append(piece)
    return sentences
