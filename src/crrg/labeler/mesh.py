"""Checking the labeler against the MeSH terms human indexers gave the IU X-Ray reports.

IU X-Ray's Open-i XML files carry ``<MeSH><major>`` terms such as ``Cardiomegaly/borderline`` or
``Opacity/lung/base/left`` that indexers assigned by reading the report. They are an independent
reference for the labeler on real report language. The mapping below turns a report's major terms
into the CheXpert observations MeSH covers; an observation is positive in the reference when any
term maps to it. Reports indexed "No Indexing" are left out (nobody indexed them). Enlarged
Cardiomediastinum has too few MeSH terms ("Mediastinum/...") to score but is mapped anyway.

The mapping follows the labeler's documented decisions (:mod:`crrg.labeler.phrases`): scarring
(``Cicatrix``) of the lung and interstitial ``Markings`` are Lung Opacity, blunted
``Costophrenic Angle`` is Pleural Effusion, pleural ``Thickening``/``Cicatrix/pleura`` is Pleural
Other, ``Cardiac Shadow/enlarged`` is Cardiomegaly, a *round* ``Opacity``/``Density`` is a nodule
(Lung Lesion, as the labeler reads "nodular opacity"), and a calcified granuloma is not a Lung Lesion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

# observation -> predicate over one MeSH major term split into [heading, qualifier, ...]
_RULES: dict[str, Callable[[list[str]], bool]] = {
    "No Finding": lambda t: t[0] == "normal",
    "Enlarged Cardiomediastinum": lambda t: t[0] == "Mediastinum" and any(q in t for q in ("enlarged", "prominent", "widened")),
    "Cardiomegaly": lambda t: t[0] == "Cardiomegaly" or (t[0] == "Cardiac Shadow" and "enlarged" in t),
    "Lung Opacity": lambda t: (t[0] in ("Opacity", "Airspace Disease", "Infiltrate", "Density") and "round" not in t)
    or (t[0] == "Cicatrix" and "pleura" not in t)
    or (t[0] == "Markings" and "interstitial" in t),
    "Lung Lesion": lambda t: t[0] in ("Nodule", "Mass") or (t[0] in ("Opacity", "Density") and "round" in t),
    "Edema": lambda t: t[0] in ("Pulmonary Edema", "Pulmonary Congestion"),
    "Consolidation": lambda t: t[0] == "Consolidation",
    "Pneumonia": lambda t: t[0] == "Pneumonia",
    "Atelectasis": lambda t: t[0] == "Pulmonary Atelectasis",
    "Pneumothorax": lambda t: t[0] in ("Pneumothorax", "Hydropneumothorax"),
    "Pleural Effusion": lambda t: t[0] in ("Pleural Effusion", "Hydropneumothorax") or (t[0] == "Costophrenic Angle" and "blunted" in t),
    "Pleural Other": lambda t: (t[0] in ("Thickening", "Cicatrix") and "pleura" in t),
    "Fracture": lambda t: t[0] == "Fractures, Bone",
    "Support Devices": lambda t: t[0] in ("Catheters, Indwelling", "Implanted Medical Device", "Surgical Instruments",
                                           "Tube, Inserted", "Medical Device", "Stents", "Pacemaker, Artificial"),
}

# Observations with enough MeSH terms (at least 20 reports) to report a meaningful F1.
SCORED = (
    "No Finding", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
    "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
)
TARGETS = {"Cardiomegaly": 0.85, "Pleural Effusion": 0.85, "Pneumothorax": 0.85, "No Finding": 0.85}
MACRO_TARGET = 0.75


def mesh_observations(terms: Iterable[str]) -> set[str]:
    """The CheXpert observations a report's MeSH major terms assert."""
    found = set()
    for term in terms:
        parts = [p.strip() for p in str(term).split("/")]
        if not parts or not parts[0]:
            continue
        for name, rule in _RULES.items():
            if rule(parts):
                found.add(name)
    return found


def is_indexed(terms: Sequence[str]) -> bool:
    return bool(terms) and not any(str(t).strip().startswith("No Indexing") for t in terms)


@dataclass
class Score:
    observation: str
    support: int
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict:
        return {"support": self.support, "tp": self.tp, "fp": self.fp, "fn": self.fn,
                "precision": round(self.precision, 4), "recall": round(self.recall, 4), "f1": round(self.f1, 4)}


def score_against_mesh(labels: Sequence[dict], mesh_terms: Sequence[Sequence[str]], uncertain_positive: bool,
                       observations: Sequence[str] = SCORED) -> dict[str, Score]:
    """Per-observation counts: the labeler's positive (1, and -1 when ``uncertain_positive``) vs MeSH."""
    positive = {1, -1} if uncertain_positive else {1}
    scores = {name: Score(name, 0, 0, 0, 0) for name in observations}
    for lab, terms in zip(labels, mesh_terms):
        reference = mesh_observations(terms)
        for name in observations:
            pred = lab.get(name) in positive
            ref = name in reference
            s = scores[name]
            s.support += ref
            s.tp += pred and ref
            s.fp += pred and not ref
            s.fn += ref and not pred
    return scores


def macro_f1(scores: dict[str, Score]) -> float:
    return sum(s.f1 for s in scores.values()) / max(len(scores), 1)
