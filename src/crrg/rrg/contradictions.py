"""Self-contradiction in a report: what it is, how to find it, and which sentence gives way.

A report contradicts itself when two of its sentences cannot both be true:

* a **finding and its negation**: a positive or uncertain mention of a CheXpert observation and a
  negated one, on overlapping sides ("Small left pleural effusion." / "No pleural effusion or
  pneumothorax."; "No right pneumothorax." and "Small left pneumothorax." do not clash);
* a **blanket normal statement beside a stated abnormality it covers**: "The lungs are clear." beside
  "Left upper lobe consolidation.", "No acute cardiopulmonary process." beside "Moderate pulmonary
  edema.". What a blanket statement covers depends on what it is about (:func:`blanket_scope`):
  the bones ("No acute osseous abnormality.") cover fractures only, the heart and mediastinum cover
  their enlargement, the lungs cover the parenchymal findings, an "acute" statement leaves out the
  chronic findings a radiologist writes beside it without contradiction ("Stable cardiomegaly. No acute
  cardiopulmonary process."), and anything else ("Normal chest.") covers every finding but devices.
  A statement that carves out what was said ("The lungs are otherwise clear.") is no blanket, nor is a
  sentence about a device ("Intact sternotomy wires."), and a finding stated as old, stable or calcified
  ("Calcified granuloma.") is denied by no blanket statement (its negation still clashes).

On the 2,000 reports of a synthetic training set the check finds nothing; on the 3,927 IU X-Ray
radiologists' reports it flags 349 (8.9 %), most of them real ("The lungs are clear." beside "Minimal
right basilar subsegmental atelectasis."), some the labeler's misreadings.

Sentences are labelled with :mod:`crrg.labeler` (the same labeler the clinical scores use), so the
check sees a report as the evaluation does. :func:`resolve` decides which sentence of each clash is
dropped: the finding classifier's present/absent decision on the observation wins when there is one;
without one the abnormal statement wins over the negation or blanket normal (a report that keeps a
possible finding costs a second look; one that hides it costs a missed finding).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crrg.observations import CHEXPERT_14

NO_FINDING = "No Finding"
NOT_A_FINDING = frozenset({NO_FINDING, "Support Devices"})
LUNG_FINDINGS = frozenset({"Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis"})
HEART_FINDINGS = frozenset({"Cardiomegaly", "Enlarged Cardiomediastinum"})
PLEURAL_FINDINGS = frozenset({"Pleural Effusion", "Pleural Other", "Pneumothorax"})
# findings a radiologist states beside "no acute ... process" without contradicting it
CHRONIC_FINDINGS = frozenset({"Cardiomegaly", "Enlarged Cardiomediastinum", "Lung Lesion", "Pleural Other"})
ALL_FINDINGS = frozenset(CHEXPERT_14) - NOT_A_FINDING

_SIDES = re.compile(r"\b(right|left|bilateral|bibasilar|both)\b")
_BOTH = frozenset({"bilateral", "bibasilar", "both"})
_BLANKET = re.compile(r"\b(lungs?|lung fields?)\b[^.;]*\b(are|is)\s+(otherwise\s+)?clear\b|\bclear lungs?\b"
                      r"|\bno acute\b|\bnormal (chest|study|radiograph|examination|exam)\b|\bunremarkable\b")
_CARVED_OUT = re.compile(r"\b(otherwise|except|apart from|aside from|besides)\b")
# a sentence must say "normal" to be a blanket statement: the labeler also gives "No Finding" alone to
# sentences about devices or technique ("Midline sternotomy.", "2 images.")
_NORMAL_CUE = re.compile(r"\b(normal|clear|unremarkable|intact|negative|no acute|within (normal )?limits"
                         r"|no (active |significant |focal )?(disease|abnormalit\w+|findings?))\b")
# a finding stated as old does not clash with a blanket statement ("Stable cardiomegaly. No acute process.",
# "Calcified granuloma. The lungs are clear."); its negation still clashes ("Normal heart size.")
_CHRONIC = re.compile(r"\b(chronic\w*|stable|unchanged|old|healed|again (noted|seen)|redemonstrat\w+|persistent"
                      r"|scar\w*|calcified|granulomas?)\b")


@dataclass(frozen=True)
class Claim:
    """One thing a sentence states: ``observations`` present (or possibly present) or absent, on ``sides``.

    A finding's mention covers that one observation; a blanket normal statement covers its scope."""

    observations: frozenset[str]
    present: bool
    sides: frozenset[str]
    blanket: bool = False
    chronic: bool = False  # a finding stated as old or unchanged: no blanket statement denies it


@dataclass(frozen=True)
class Contradiction:
    first: int  # indices into the sentences given
    second: int
    observation: str

    def describe(self, texts: list[str]) -> str:
        return f"{self.observation}: {texts[self.first]!r} vs {texts[self.second]!r}"


def blanket_scope(text: str) -> frozenset[str]:
    """The findings a blanket normal statement rules out, from what it is about (see the module doc)."""
    t = text.lower()
    if re.search(r"\b(osseous|bony|bones?|skelet\w*)\b", t):
        return frozenset({"Fracture"})
    if re.search(r"\b(heart|cardiac|cardiomediastinal|mediastin\w*)\b", t) and "cardiopulmonary" not in t:
        return HEART_FINDINGS
    if re.search(r"\bpleura\w*\b", t):
        return PLEURAL_FINDINGS
    if re.search(r"\bvascula\w*\b", t):
        return frozenset({"Edema"})
    scope = ALL_FINDINGS
    if re.search(r"\b(lungs?|lung fields?|pulmonary|airspace|parenchym\w*)\b", t) and "cardiopulmonary" not in t:
        scope = LUNG_FINDINGS
    elif re.search(r"\b(cardiopulmonary|intrathoracic|thoracic)\b", t):
        scope = ALL_FINDINGS - {"Fracture"}
    if re.search(r"\bacute\b", t):
        scope = scope - CHRONIC_FINDINGS
    return scope


def claims(text: str) -> list[Claim]:
    """What one sentence states, as :class:`Claim` s (labelled with :func:`crrg.labeler.label_report`)."""
    from crrg.labeler import label_report

    labels = label_report(text)
    lower = text.lower()
    sides = frozenset(_SIDES.findall(lower))
    chronic = bool(_CHRONIC.search(lower))
    out = [Claim(frozenset({name}), value in (1, -1), sides, chronic=chronic and value in (1, -1))
           for name, value in labels.items() if value is not None and name not in NOT_A_FINDING]
    stated_other = any(c.present for c in out)
    about_device = labels.get("Support Devices") in (1, -1)  # "Intact sternotomy wires." is no normal study
    unknown_subject = "xxxx" in lower  # de-identified words (IU X-Ray): what is normal is unknown
    if (labels.get(NO_FINDING) == 1 and not stated_other and not about_device and not unknown_subject
            and not _CARVED_OUT.search(lower)):
        if (not out and _NORMAL_CUE.search(lower)) or _BLANKET.search(lower):
            out.append(Claim(blanket_scope(text), False, sides, blanket=True))
    return out


def _sides_overlap(a: frozenset[str], b: frozenset[str]) -> bool:
    return not a or not b or bool(a & b) or bool((a | b) & _BOTH)


def _clash(a: Claim, b: Claim) -> str | None:
    """The observation two claims disagree on, or None."""
    if a.present == b.present or not _sides_overlap(a.sides, b.sides):
        return None
    if (a.blanket and b.chronic) or (b.blanket and a.chronic):
        return None
    shared = a.observations & b.observations
    return min(shared, key=CHEXPERT_14.index) if shared else None


def find_contradictions(texts: list[str], labelled: list[list[Claim]] | None = None) -> list[Contradiction]:
    """Every pair of sentences (in order) that contradict each other, with the observation they clash on."""
    stated = labelled if labelled is not None else [claims(t) for t in texts]
    found = []
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            for a in stated[i]:
                hit = next((obs for b in stated[j] if (obs := _clash(a, b))), None)
                if hit:
                    found.append(Contradiction(i, j, hit))
                    break
    return found


def wrong_side(impression_sentence: str, findings: list[str]) -> str | None:
    """The observation an IMPRESSION sentence puts on a side where the FINDINGS do not have it ("Right
    upper lobe consolidation." over FINDINGS whose only consolidation is "Left lower lobe consolidation."),
    or None. A summary cannot move a finding to the other lung."""
    stated = [c for t in findings for c in claims(t) if c.present and not c.blanket]
    for c in claims(impression_sentence):
        if not c.present or c.blanket or not c.sides:
            continue
        same = [f for f in stated if c.observations & f.observations]
        if same and not any(_sides_overlap(c.sides, f.sides) for f in same):
            return min(c.observations, key=CHEXPERT_14.index)
    return None


def report_contradictions(report: str, impression: str | None = None) -> list[str]:
    """The contradictions of a report's text, described: between any two of its sentences, and, when the
    IMPRESSION is given apart from the FINDINGS (``report``), an impression sentence on the wrong side."""
    from crrg.text import split_sentences

    findings = split_sentences(report) if report.strip() else []
    summary = split_sentences(impression) if impression and impression.strip() else []
    texts = findings + summary
    found = [c.describe(texts) for c in find_contradictions(texts)]
    found += [f"{obs}: impression {t!r} on the other side from the findings"
              for t in summary if (obs := wrong_side(t, findings))]
    return found


def _abnormal_side(c: Contradiction, stated: list[list[Claim]]) -> tuple[int, int]:
    """(index of the sentence stating the finding, index of the one negating it) for a clash."""
    first_present = any(cl.present and c.observation in cl.observations for cl in stated[c.first])
    return (c.first, c.second) if first_present else (c.second, c.first)


def resolve(texts: list[str], decisions: dict[str, bool] | None = None) -> list[bool]:
    """Which sentences to keep so that none contradicts another: per clash, the sentence that
    disagrees with the classifier's decision on the observation goes (``decisions``: present/absent
    per CheXpert name); without a decision the negation or blanket normal statement goes. Clashes are
    settled in order, and a sentence already dropped settles every clash it was part of."""
    stated = [claims(t) for t in texts]
    keep = [True] * len(texts)
    for c in find_contradictions(texts, stated):
        if not (keep[c.first] and keep[c.second]):
            continue
        abnormal, normal = _abnormal_side(c, stated)
        decided = (decisions or {}).get(c.observation)
        keep[abnormal if decided is False else normal] = False
    return keep
