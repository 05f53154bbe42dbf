"""Split a free-text radiology report into its sections (FINDINGS, IMPRESSION, INDICATION, ...).

MIMIC-CXR reports are free text with upper-case headings ("FINDINGS:", "IMPRESSION:",
"REASON FOR EXAM:", "CLINICAL HISTORY:", ...), wrapped at about 80 columns. Models and metrics
want the sections as separate strings, so this module maps the many heading spellings onto a few
canonical keys.

The text of each section is kept word for word: only whitespace is normalised (wrapped lines are
joined, runs of spaces collapsed), because de-identification tokens and numbering are a cleaning
decision of the consumer (``crrg.text.clean_report``), not of section splitting.

Rules, in the spirit of MIT-LCP's ``create_section_files.py`` for MIMIC-CXR:

* a heading is an upper-case name and a colon at the start of a line; unknown upper-case headings
  ("ADDENDUM:", "NOTE:") end the previous section and are kept under their own lower-cased key;
  when no upper-case FINDINGS / IMPRESSION heading exists, known names ("Findings:", "Impression:")
  are also recognised in any letter case and right after a sentence end on the same line, while
  "Heart size: normal" is never a heading; a known upper-case heading right after a sentence end
  ("FINDINGS: Clear. IMPRESSION: Normal." on one line) starts the findings or impression unless a
  heading at the start of a line already does;
* HISTORY / REASON FOR EXAM / CLINICAL INFORMATION fold into ``indication``; two such sections are
  joined in reading order;
* "FINDINGS AND IMPRESSION:" goes to ``findings``;
* a text without any heading is all ``findings`` (IU X-Ray style fragments, user CSVs);
* a text with headings but neither findings nor impression gets the last paragraph of its
  unlabelled text as ``findings`` (MIT-LCP's "last paragraph" fallback), so no report comes out empty
  when it has content.
"""

from __future__ import annotations

import re

MAIN_SECTIONS: tuple[str, ...] = ("indication", "comparison", "findings", "impression")

# Heading text (upper case, single spaces, no colon) -> canonical key.
_HEADINGS: dict[str, str] = {}


def _add(key: str, *names: str) -> None:
    for name in names:
        _HEADINGS[name] = key


_add("findings", "FINDINGS", "FINDING", "FINDINGS AND IMPRESSION", "FINDINGS/IMPRESSION", "FINDINGS AND IMPRESSIONS",
     "IMPRESSION AND FINDINGS", "FINDINGS/IMPRESSIONS", "REPORT", "DESCRIPTION", "PA AND LATERAL VIEWS OF THE CHEST",
     "PORTABLE AP VIEW OF THE CHEST", "PORTABLE CHEST")
_add("impression", "IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS", "SUMMARY", "OPINION", "DIAGNOSIS")
_add("indication", "INDICATION", "INDICATIONS", "HISTORY", "CLINICAL HISTORY", "MEDICAL HISTORY", "HISTORY/INDICATION",
     "INDICATION/HISTORY", "REASON FOR EXAM", "REASON FOR EXAMINATION", "REASON FOR STUDY", "REASON FOR THE EXAM",
     "CLINICAL INDICATION", "CLINICAL INDICATIONS", "CLINICAL INFORMATION", "CLINICAL DATA", "CLINICAL HISTORY/INDICATION",
     "CLINICAL INFORMATION & QUESTIONS TO BE ANSWERED", "CLINICAL QUESTION", "PATIENT HISTORY", "REASON")
_add("comparison", "COMPARISON", "COMPARISONS", "COMPARISON STUDY", "COMPARISON STUDIES", "COMPARISON EXAM", "PRIOR",
     "PRIORS", "PRIOR STUDY", "PRIOR STUDIES", "PRIOR EXAM", "PRIOR EXAMS", "REFERENCE EXAM")
_add("technique", "TECHNIQUE", "TECHNIQUES", "PROCEDURE", "VIEWS", "VIEW", "FRONTAL AND LATERAL VIEWS OF THE CHEST")
_add("examination", "EXAMINATION", "EXAM", "STUDY", "TYPE OF EXAMINATION", "CHEST RADIOGRAPH", "CHEST X-RAY",
     "CHEST, TWO VIEWS", "CHEST, PA AND LATERAL", "CHEST (PA AND LAT)", "CHEST (PORTABLE AP)")
_add("recommendation", "RECOMMENDATION", "RECOMMENDATIONS", "RECOMMENDATION(S)", "FOLLOW-UP", "FOLLOW UP")
_add("notification", "NOTIFICATION", "NOTIFICATIONS", "COMMUNICATION")
_add("addendum", "ADDENDUM")
_add("wet_read", "WET READ")

# A heading: at the start of a line, upper-case words (letters, digits, spaces, / & ( ) , . -),
# then a colon. Lower-case text before a colon ("Heart size: normal") is not a heading.
_HEADING_RE = re.compile(r"(?m)^[ \t]*([A-Z][A-Z0-9 /&(),.\-]{1,60}?)[ \t]*:")
# Known headings are also found in any letter case and after a sentence end on the same line
# ("... no effusion. Impression: normal."), as in hand-written reports and user tables.
_KNOWN_RE = re.compile(
    r"(?im)(?:^[ \t]*|(?<=[.!?])[ \t]+)("
    + "|".join(re.escape(name).replace(r"\ ", r"\s+") for name in sorted(_HEADINGS, key=len, reverse=True))
    + r")[ \t]*:"
)
# An upper-case heading right after a sentence end on the same line ("FINDINGS: Clear. IMPRESSION: Normal."),
# as in one-line reports of user tables; kept only when it is a heading we know.
_INLINE_UPPER_RE = re.compile(r"(?<=[.!?])[ \t]+([A-Z][A-Z0-9 /&(),\-]{1,60}?)[ \t]*:")
_WS_RE = re.compile(r"\s+")
_PARAGRAPH_RE = re.compile(r"\n[ \t]*\n")


def _squash(text: str) -> str:
    return _WS_RE.sub(" ", text).strip()


def _canonical(heading: str) -> str | None:
    name = _squash(heading).rstrip(".").upper()
    if name in _HEADINGS:
        return _HEADINGS[name]
    return None


def _find_headings(text: str) -> list[re.Match[str]]:
    """Heading matches in reading order.

    The any-case / inline pass is slow next to the upper-case one (a long alternation tried at
    every sentence end), so it runs only when the upper-case pass found no FINDINGS or IMPRESSION
    heading, which is never the case for a sectioned MIMIC-CXR report.
    """
    upper = list(_HEADING_RE.finditer(text))
    if any(_canonical(m.group(1)) in ("findings", "impression") for m in upper):
        # Inline headings only start the findings or impression when no line-start heading does: a report
        # laid out one heading a line may quote "IMPRESSION:" or "COMPARISON :" inside its text (IU X-Ray
        # CXR2415, CXR2800); a one-line report has nothing else to go by.
        wanted = {"findings", "impression"} - {_canonical(m.group(1)) for m in upper}
        inline = [m for m in _INLINE_UPPER_RE.finditer(text) if _canonical(m.group(1)) in wanted] if wanted else []
        if not inline:
            return upper
        found = sorted([*upper, *inline], key=lambda m: (m.start(1), -m.end()))
    else:
        found = sorted([*upper, *_KNOWN_RE.finditer(text)], key=lambda m: (m.start(1), -m.end()))
    headings: list[re.Match[str]] = []
    for match in found:
        if headings and match.start(1) < headings[-1].end():
            continue
        headings.append(match)
    return headings


def extract_sections(text: str) -> dict[str, str]:
    """Return the sections of a report, keyed by canonical name.

    The four :data:`MAIN_SECTIONS` are always present (empty string when absent); other sections
    (technique, examination, recommendation, notification, addendum, wet_read, and unknown upper-case
    headings lower-cased with spaces as underscores) appear only when the report has them. Header
    lines such as "FINAL REPORT" before the first heading are not returned.
    """
    if not isinstance(text, str):
        raise TypeError(f"extract_sections expects a string, got {type(text).__name__}")
    sections: dict[str, str] = {key: "" for key in MAIN_SECTIONS}
    matches = _find_headings(text)
    if not matches:
        sections["findings"] = _squash(text)
        return sections

    known_seen = False
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        key = _canonical(match.group(1))
        if key is None:
            key = _squash(match.group(1)).lower().replace(" ", "_")
        else:
            known_seen = True
        content = _squash(text[match.end(): end])
        previous = sections.get(key, "")
        sections[key] = f"{previous} {content}" if previous and content else previous or content
    if not known_seen:
        # Upper-case words before a colon that are no section we know ("NOTE: ..."): treat the text
        # as unsectioned rather than lose it.
        sections = {key: "" for key in MAIN_SECTIONS}
        sections["findings"] = _squash(text)
        return sections
    if not sections["findings"] and not sections["impression"]:
        _last_paragraph_as_findings(text, sections)
    return sections


def _last_paragraph_as_findings(text: str, sections: dict[str, str]) -> None:
    """Move the report's last paragraph into findings when it has no heading of its own.

    Reports without FINDINGS/IMPRESSION headings usually end with the radiologist's free-text
    reading in a paragraph of its own, which the heading rules have appended to whatever section
    came before it (often INDICATION).
    """
    paragraphs = [p for p in _PARAGRAPH_RE.split(text) if p.strip()]
    if not paragraphs:
        return
    last = paragraphs[-1]
    if _HEADING_RE.match(last) or _KNOWN_RE.match(last):
        return
    content = _squash(last)
    for key, value in sections.items():
        if value.endswith(content):
            sections[key] = value[: len(value) - len(content)].strip()
            sections["findings"] = content
            return
