"""The text normalisation applied before comparing or labelling reports.

:func:`normalize_for_metrics` makes two reports that differ only in case, spacing, punctuation
spacing or de-identification artefacts compare equal. The COCO caption metrics (BLEU, METEOR,
ROUGE-L, CIDEr) do NOT use it: they use pycocoevalcap's PTBTokenizer exactly, so that their numbers
match published ones. This normalisation serves the labeler, clinical efficacy and tokenizer
training, where a stable, documented form matters more than matching another toolkit.
"""

from __future__ import annotations

import re
import unicodedata

from crrg.text.clean import remove_deid_tokens, remove_numbering

_SPLIT_PUNCT = re.compile(r"([.,;:!?()\[\]\"])")
_DECIMAL = re.compile(r"(?<=\d) \. (?=\d)")
_SPACES = re.compile(r"\s+")
_REPEATED_PUNCT = re.compile(r"([.,;:!?])(?: \1)+")


def normalize_for_metrics(text: str | None, keep_deid: bool = False) -> str:
    """Return the canonical form of a report for comparison.

    Exactly these steps, in order:

    1. Unicode NFKC (full-width characters, ligatures, non-breaking spaces become plain ASCII forms);
    2. ``XXXX`` de-identification runs removed (kept as ``xxxx`` with ``keep_deid=True``);
    3. list numbering ("1.", "2)") at line or sentence starts removed;
    4. lower-casing;
    5. each of ``. , ; : ! ? ( ) [ ] "`` becomes a separate token (surrounded by single spaces),
       except a period between two digits ("2.5" stays one token); hyphens, slashes and
       apostrophes stay inside words ("x-ray", "and/or", "patient's");
    6. repeated punctuation tokens collapse to one ("..", ". ." become ".");
    7. all whitespace (newlines, tabs) collapses to single spaces, ends stripped.
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text)
    if not keep_deid:
        text = remove_deid_tokens(text)
    text = remove_numbering(text)
    text = text.lower()
    text = _SPLIT_PUNCT.sub(r" \1 ", text)
    text = _DECIMAL.sub(".", text)
    text = _SPACES.sub(" ", text).strip()
    text = _REPEATED_PUNCT.sub(r"\1", text)
    return text
