"""Region supervision without boxes: report sentences -> anatomical regions, and pseudo boxes from a detector.

The region-guided generator learns, per region, a box, whether the region is described and the
sentences about it. MIMIC-CXR has those from Chest ImaGenome; IU X-Ray (and MIMIC-CXR without it)
has only reports. This module gives such a dataset the same supervision:

* :func:`assign_regions` maps one sentence to the regions it speaks about with a lexicon of
  anatomical phrases ("right upper lobe", "costophrenic angle", "cardiac silhouette", "carina",
  ...), a side ("right", "left", "bilateral", or both when a paired structure is named in the plural
  or without a side), default sites of findings named without anatomy (an effusion is read at the
  costophrenic angle, a pneumothorax at the apex, edema at the hila), and the parent rule of Chest
  ImaGenome's hierarchy (a lung zone, apex, hilum or costophrenic angle is part of its lung).
* :func:`pseudo_regions` gives every region a box from a trained region detector run on the frontal
  image (by default the bundled crrg-default's), so the detector stage has targets and the later
  stages see the same boxes they would see at inference.
* :func:`score_assignment` measures an assignment against reference (sentence, region) pairs:
  micro precision, recall and F1 over pairs.

A sentence no rule matches gets no region (it is counted): a report's "global" sentences are still
learnt by the generator's summary query, as for the synthetic data.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from crrg.observations import ANATOMICAL_REGIONS
from crrg.records import Region, StudyRecord

log = logging.getLogger(__name__)

_ORDER = {name: i for i, name in enumerate(ANATOMICAL_REGIONS)}
SIDES = ("right", "left")

# (pattern, regions) where "{s}" is filled with the side(s) the phrase refers to. Longer phrases first:
# a match consumes its text, so "upper mediastinum" is not also "mediastinum".
_PAIRED: list[tuple[str, tuple[str, ...]]] = [
    (r"costophrenic|cp angle|costodiaphragmatic", ("{s} costophrenic angle",)),
    (r"hemidiaphragm\w*|diaphragm\w*", ("{s} hemidiaphragm",)),
    (r"apic(?:al|es)|apex|apices|upper[- ]most", ("{s} apical zone",)),
    (r"upper (?:lobes?|lungs?|zones?|lung zones?)|upper and mid", ("{s} upper lung zone",)),
    (r"lingula\w*", ("{s} mid lung zone",)),
    (r"middle lobe", ("{s} mid lung zone", "{s} lower lung zone")),
    (r"mid(?:dle)?[- ]?(?:lungs?|zones?|lung zones?)|midlung|mid and lower", ("{s} mid lung zone",)),
    (r"lower (?:lobes?|lungs?|zones?|lung zones?)|bases?|basal|basilar|bibasilar|bibasal|retrocardiac|infrahilar",
     ("{s} lower lung zone",)),
    (r"hil(?:um|ar|a)|perihilar", ("{s} hilar structures",)),
    (r"clavicles?", ("{s} clavicle",)),
    (r"lungs?|pulmonary|pneumothora(?:x|ces)|lung volumes?|parenchym\w*|air ?space|pleura\w*|pleural",
     ("{s} lung",)),
]
_SINGLE: list[tuple[str, tuple[str, ...]]] = [
    (r"upper mediastin\w*|superior mediastin\w*|paratracheal", ("upper mediastinum", "mediastinum")),
    (r"cardiomediastinal|cardio-mediastinal|mediastinal (?:and|&) (?:cardiac|heart)|heart and mediastinum",
     ("cardiac silhouette", "mediastinum")),
    (r"cardiac|heart|cardiomegaly|pericardial", ("cardiac silhouette",)),
    (r"mediastin\w*", ("mediastinum",)),
    (r"aort\w*|aortic knob", ("aortic arch",)),
    (r"cavoatrial|cavo-atrial", ("cavoatrial junction",)),
    (r"right atri\w*", ("right atrium",)),
    (r"svc|superior vena cava|vena cava", ("svc",)),
    (r"carina", ("carina",)),
    (r"trache\w*|endotracheal|et tube|ett", ("trachea",)),
    (r"spine|spinal|vertebra\w*|thoracic spine|kyphosis|scoliosis|spondyl\w*", ("spine",)),
    (r"abdomen|abdominal|subdiaphragmatic|free air|bowel|stomach|gastric|upper quadrant", ("abdomen",)),
    (r"osseous|bony|bones|skeletal", ("spine", "right clavicle", "left clavicle")),
    (r"sternotomy|sternal wires?", ("mediastinum",)),
]
# Findings named without anatomy, read where they usually are (applied only when the sentence named
# no region of that kind).
_FINDING_SITES: list[tuple[str, tuple[str, ...]]] = [
    (r"effusions?", ("{s} costophrenic angle", "{s} lung")),
    (r"pneumothora(?:x|ces)", ("{s} apical zone", "{s} lung")),
    (r"edema|congestion|vascular", ("{s} hilar structures", "{s} lung")),
    (r"consolidation\w*|opacit\w*|atelectas\w*|pneumonia|infiltrat\w*|nodul\w*|mass(?:es)?|granulom\w*|emphysema\w*|"
     r"scar\w*|fibros\w*", ("{s} lung",)),
]
_PARENT = re.compile(r"^(right|left) (upper lung zone|mid lung zone|lower lung zone|apical zone|hilar structures|costophrenic angle)$")
_SIDE_RE = re.compile(r"\b(right|left|bilateral(?:ly)?|both|bibasilar|bibasal|biapical|bilaterally)\b")
_PLURAL_RE = re.compile(r"\b(lungs|bases|apices|hila|lobes|zones|costophrenic angles|hemidiaphragms|clavicles|effusions|pneumothoraces)\b")


def _compile(rules):
    return [(re.compile(rf"\b(?:{pattern})\b"), regions) for pattern, regions in rules]


_PAIRED_RE = _compile(_PAIRED)
_SINGLE_RE = _compile(_SINGLE)
_FINDING_RE = _compile(_FINDING_SITES)


def _sides_near(text: str, start: int, default: tuple[str, ...]) -> tuple[str, ...]:
    """The side(s) a phrase at ``start`` refers to: the nearest side word before it in its clause."""
    clause_start = max(text.rfind(c, 0, start) for c in ",;:(") + 1
    words = list(_SIDE_RE.finditer(text, clause_start, start))
    if not words:
        return default
    word = words[-1].group(1)
    return (word,) if word in SIDES else SIDES


def _sentence_default(text: str) -> tuple[str, ...]:
    found = {m.group(1) for m in _SIDE_RE.finditer(text)}
    sides = tuple(s for s in SIDES if s in found)
    if found - set(SIDES) or not sides:
        return SIDES  # "bilateral", "both", or no side at all: both sides
    return sides


def assign_regions(sentence: str) -> tuple[str, ...]:
    """The regions one report sentence is about, in :data:`ANATOMICAL_REGIONS` order (empty if none)."""
    text = " " + sentence.lower().replace("-", " ") + " "
    default = _sentence_default(text)
    plural = bool(_PLURAL_RE.search(text))
    found: set[str] = set()
    consumed = [False] * len(text)

    def take(rules, paired: bool) -> None:
        for pattern, regions in rules:
            for match in pattern.finditer(text):
                if any(consumed[match.start():match.end()]):
                    continue
                for i in range(match.start(), match.end()):
                    consumed[i] = True
                if paired:
                    sides = _sides_near(text, match.start(), SIDES if plural and default == SIDES else default)
                    found.update(r.format(s=s) for r in regions for s in sides)
                else:
                    found.update(regions)

    take(_SINGLE_RE, paired=False)
    take(_PAIRED_RE, paired=True)
    for pattern, regions in _FINDING_RE:
        match = pattern.search(text)
        if match and not any(r.format(s=s) in found for r in regions[:1] for s in SIDES):
            sides = _sides_near(text, match.start(), default)
            found.update(r.format(s=s) for r in regions for s in sides)
    for name in list(found):
        parent = _PARENT.match(name)
        if parent:
            found.add(f"{parent.group(1)} lung")
    return tuple(sorted((r for r in found if r in _ORDER), key=_ORDER.__getitem__))


def assign_report(sentences: Iterable[str]) -> dict[str, list[str]]:
    """region -> the sentences about it, for the sentences of one report (regions in canonical order)."""
    out: dict[str, list[str]] = {}
    for sentence in sentences:
        for region in assign_regions(sentence):
            if sentence not in out.setdefault(region, []):
                out[region].append(sentence)
    return {name: out[name] for name in ANATOMICAL_REGIONS if name in out}


@dataclass(frozen=True)
class AssignmentScore:
    pairs_true: int
    pairs_predicted: int
    pairs_correct: int
    sentences: int

    @property
    def precision(self) -> float:
        return self.pairs_correct / self.pairs_predicted if self.pairs_predicted else 0.0

    @property
    def recall(self) -> float:
        return self.pairs_correct / self.pairs_true if self.pairs_true else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict:
        return {"sentences": self.sentences, "pairs_true": self.pairs_true, "pairs_predicted": self.pairs_predicted,
                "precision": round(self.precision, 4), "recall": round(self.recall, 4), "f1": round(self.f1, 4)}


def reference_pairs(records: Iterable[StudyRecord]) -> Iterator[tuple[str, frozenset[str]]]:
    """(sentence, its reference regions) from records whose regions carry sentences (ImaGenome, synth)."""
    for record in records:
        by_sentence: dict[str, set[str]] = {}
        for region in record.regions or []:
            for sentence in region.sentences:
                by_sentence.setdefault(sentence, set()).add(region.name)
        for sentence, names in by_sentence.items():
            yield sentence, frozenset(names)


def score_assignment(pairs: Iterable[tuple[str, frozenset[str]]]) -> AssignmentScore:
    """Micro precision / recall / F1 of :func:`assign_regions` over (sentence, region) pairs."""
    true = predicted = correct = sentences = 0
    for sentence, reference in pairs:
        guess = set(assign_regions(sentence))
        true += len(reference)
        predicted += len(guess)
        correct += len(guess & reference)
        sentences += 1
    return AssignmentScore(true, predicted, correct, sentences)


def pseudo_regions(record: StudyRecord, boxes: dict[str, list[float]], image: int) -> list[Region]:
    """All 29 regions with the given boxes, the sentences of the record's report assigned to them, and
    a region abnormal when one of its sentences is not a plain negative / normal statement."""
    from crrg.labeler import label_report
    from crrg.text import split_sentences

    assigned = assign_report(split_sentences(record.report))
    regions = []
    for name in ANATOMICAL_REGIONS:
        sentences = assigned.get(name, [])
        abnormal = any(_is_abnormal(label_report(s)) for s in sentences)
        regions.append(Region(name=name, image=image, box=[float(v) for v in boxes[name]], abnormal=abnormal,
                              sentences=sentences))
    return regions


def _is_abnormal(labels: dict) -> bool:
    return any(value in (1, -1) for name, value in labels.items() if name != "No Finding")


def frontal_image(record: StudyRecord) -> int | None:
    """The image regions are read from: the first PA/AP image, else the first non-lateral, else none."""
    for i, im in enumerate(record.images):
        if im.view in ("PA", "AP"):
            return i
    return next((i for i, im in enumerate(record.images) if im.view not in ("LATERAL", "LL")), None)


class PseudoBoxes:
    """Boxes of the 29 regions on an image from a trained region detector (a saved rrg model's)."""

    def __init__(self, model: str = "crrg-default", device: str = "cpu") -> None:
        from crrg.generation import resolve_device
        from crrg.models.registry import load_pretrained

        self.device = resolve_device(device)  # checked before the model loads: cuda without a GPU is one line
        rrg = load_pretrained(model)
        if not hasattr(rrg, "detector"):
            raise ValueError(f"model {model} has no region detector")
        self.detector = rrg.detector.eval().to(self.device)
        self.image_size = int(rrg.detector.cfg.image_size)

    def __call__(self, path: str) -> dict[str, list[float]]:
        import torch

        from crrg.image import load_image, resize
        from crrg.rrg.detector import to_rgb_tensor

        image = load_image(path)
        h, w = image.shape
        scale = min(1.0, self.image_size / max(h, w))
        if scale < 1:
            image, _ = resize(image, max(1, round(h * scale)), max(1, round(w * scale)))
        with torch.no_grad():
            boxes = self.detector.detect([to_rgb_tensor(image).to(self.device)])[0].boxes.cpu() / scale
        return {name: [round(float(v), 1) for v in box] for name, box in zip(ANATOMICAL_REGIONS, boxes.tolist())}


def enrich_records(records: Iterable[StudyRecord], boxes: PseudoBoxes, overwrite: bool = False,
                   notes: dict[str, int] | None = None) -> Iterator[StudyRecord]:
    """Records with report-assigned regions on detector boxes; ``notes`` counts what was done and skipped."""
    from crrg.errors import ImageError

    notes = notes if notes is not None else {}
    for key in ("enriched", "kept", "no frontal image", "unreadable image", "sentences", "sentences without region"):
        notes.setdefault(key, 0)
    from crrg.text import split_sentences

    for record in records:
        if record.regions and not overwrite:
            notes["kept"] += 1
            yield record
            continue
        index = frontal_image(record)
        if index is None:
            notes["no frontal image"] += 1
            yield record
            continue
        try:
            found = boxes(record.images[index].path)
        except ImageError as exc:
            log.warning("%s: %s", record.id, exc)
            notes["unreadable image"] += 1
            yield record
            continue
        sentences = split_sentences(record.report)
        notes["sentences"] += len(sentences)
        notes["sentences without region"] += sum(1 for s in sentences if not assign_regions(s))
        record.regions = pseudo_regions(record, found, index)
        notes["enriched"] += 1
        yield record
