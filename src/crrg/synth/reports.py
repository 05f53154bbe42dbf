"""Reports in radiologist language for synthetic studies, with the labels and regions each sentence carries.

Every sentence comes from a bank of phrasings per finding state and declares the CheXpert labels a
labeler should read from it and the anatomical regions it describes, so the report, the label
vector and the region annotations of a study agree by construction. Real reports state the usual
negatives ("No pneumothorax or pleural effusion."), so the normal parts of the chest get their
sentences too. With a :class:`SentenceBank` (``--sentence-bank``), sentences of a real report corpus
whose labeler output matches the finding state exactly (and whose side / size words agree) replace
ours half of the time.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crrg.observations import CHEXPERT_14
from crrg.synth.findings import Finding

log = logging.getLogger(__name__)

PATHOLOGIES = tuple(n for n in CHEXPERT_14 if n not in ("No Finding", "Support Devices"))


@dataclass
class Sentence:
    text: str
    labels: dict[str, int] = field(default_factory=dict)
    regions: tuple[str, ...] = ()
    abnormal: bool = True
    side: str = ""  # constraints for real-sentence substitution
    severity: str = ""
    location: str = ""


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    text = re.sub(r"\s+", " ", text.strip())
    return text[0].upper() + text[1:] if text else text


def _sides(side: str) -> tuple[str, ...]:
    return ("right", "left") if side == "bilateral" else (side,)


# --- banks: (template, labels) --------------------------------------------------------------------
EFFUSION = {
    "one": ["{sev} {side} pleural effusion.", "there is a {sev} {side} pleural effusion.", "{sev} {side} pleural effusion is present.",
            "{sev} {side} pleural effusion with blunting of the {side} costophrenic angle.",
            "blunting of the {side} costophrenic angle consistent with a {sev} pleural effusion.",
            "a {sev} {side}-sided pleural effusion is noted.", "{side} pleural effusion, {sev} in size."],
    "bilateral": ["{sev} bilateral pleural effusions.", "there are {sev} bilateral pleural effusions.",
                  "bilateral {sev} pleural effusions with blunting of the costophrenic angles.",
                  "{sev} pleural effusions are present bilaterally.", "blunting of both costophrenic angles from {sev} effusions."],
}
PNEUMOTHORAX = ["{sev} {side} pneumothorax.", "there is a {sev} {side} pneumothorax.", "{sev} {side} apical pneumothorax is present.",
                "a {side} pleural line is seen with absent lung markings beyond it, consistent with a {sev} pneumothorax.",
                "{sev} {side}-sided pneumothorax with a visible visceral pleural line.", "interval development of a {sev} {side} pneumothorax."]
CONSOLIDATION = ["{pattern}consolidation in the {lobe}.", "there is {pattern}consolidation of the {lobe}.",
                 "{pattern}airspace consolidation in the {lobe} with air bronchograms.",
                 "focal consolidation is seen in the {lobe}.", "{lobe} consolidation."]
PNEUMONIA_POS = ["{lobe} pneumonia.", "findings consistent with {lobe} pneumonia.", "{lobe} consolidation compatible with pneumonia."]
PNEUMONIA_UNC = ["{lobe} consolidation, concerning for pneumonia.", "{lobe} opacity may represent pneumonia.",
                 "{lobe} consolidation, possibly pneumonia in the appropriate clinical setting."]
ATELECTASIS = {
    "plate": ["{side_adj} linear atelectasis.", "there is {side_adj} plate-like atelectasis.", "streaky {side_adj} atelectasis.",
              "minimal {side_adj} subsegmental atelectasis.", "{side_adj} discoid atelectasis."],
    "basal": ["{side_adj} atelectasis with volume loss.", "{side_adj} basilar atelectasis with elevation of the hemidiaphragm.",
              "volume loss and atelectasis at the {base}.", "{side_word} lower lobe atelectasis with volume loss."],
}
EDEMA = {
    "mild": ["mild pulmonary edema.", "mild interstitial edema.", "mild pulmonary vascular congestion and interstitial edema.",
             "there is mild pulmonary edema."],
    "moderate": ["moderate pulmonary edema.", "moderate interstitial pulmonary edema with Kerley B lines.",
                 "there is moderate pulmonary edema with perihilar haziness.", "perihilar opacities and septal lines consistent with moderate pulmonary edema."],
    "severe": ["severe pulmonary edema.", "diffuse bilateral perihilar opacities consistent with severe pulmonary edema.",
               "marked interstitial and alveolar edema.", "there is severe pulmonary edema."],
}
NODULE = ["{size} mm nodule in the {zone}.", "there is a {size} mm pulmonary nodule in the {zone}.",
          "a {size} mm nodular opacity projects over the {zone}.", "{zone} nodule measuring {size} mm."]
MASS = ["{size} cm mass in the {zone}.", "there is a {size} cm mass in the {zone}.", "a large {size} cm mass projects over the {zone}.",
        "{zone} mass measuring approximately {size} cm."]
GRANULOMA = ["calcified granuloma in the {zone}.", "there is a small calcified granuloma in the {zone}.",
             "a punctate calcified granuloma projects over the {zone}.", "{zone} calcified granuloma."]
FRACTURE = {
    "acute": ["acute fracture of the {side} {nth} rib.", "there is a fracture of the {side} {nth} rib.",
              "nondisplaced {side} {nth} rib fracture.", "minimally displaced fracture of the lateral {side} {nth} rib."],
    "healing": ["healing fracture of the {side} {nth} rib.", "old healed {side} {nth} rib fracture.", "{side} {nth} rib fracture with callus formation."],
}
EMPHYSEMA = ["the lungs are hyperinflated with flattening of the hemidiaphragms, consistent with emphysema.",
             "hyperinflation consistent with COPD.", "the lungs are hyperexpanded with flattened diaphragms.",
             "emphysematous changes with hyperinflation."]
CARDIOMEGALY = {
    "mild": ["the heart is mildly enlarged.", "mild cardiomegaly.", "heart size is mildly enlarged.", "borderline to mild cardiomegaly."],
    "moderate": ["moderate cardiomegaly.", "the heart is moderately enlarged.", "there is moderate enlargement of the cardiac silhouette.",
                 "cardiomegaly, moderate."],
    "severe": ["severe cardiomegaly.", "the heart is markedly enlarged.", "marked enlargement of the cardiac silhouette.",
               "massive cardiomegaly."],
}
MEDIASTINUM = ["the mediastinum is widened.", "widening of the upper mediastinum.", "the superior mediastinum is widened.",
               "there is mediastinal widening.", "prominence of the superior mediastinum."]
DEVICES = {
    "ett": ["endotracheal tube terminates {d} cm above the carina.", "the endotracheal tube tip is {d} cm above the carina.",
            "endotracheal tube in standard position, {d} cm above the carina."],
    "central line": ["right internal jugular central venous catheter terminates in the low SVC.",
                     "right IJ central line with tip at the cavoatrial junction.", "a right-sided central venous catheter ends in the distal SVC."],
    "pacemaker": ["left chest wall pacemaker with lead terminating in the right ventricle.", "left-sided pacemaker with intact lead.",
                  "dual-chamber pacemaker projects over the left chest.", "a left chest cardiac pacing device is present with lead in the right ventricle."],
    "sternotomy": ["median sternotomy wires are intact.", "intact sternotomy wires.", "postoperative changes of median sternotomy."],
}
DEVICE_REGIONS = {"ett": ("trachea", "carina"), "central line": ("svc", "cavoatrial junction"),
                  "pacemaker": ("left upper lung zone", "right atrium", "cardiac silhouette"), "sternotomy": ("mediastinum",)}

NEG = {
    "Pneumothorax": ["no pneumothorax.", "there is no pneumothorax.", "no evidence of pneumothorax."],
    "Pleural Effusion": ["no pleural effusion.", "there is no pleural effusion.", "no pleural effusions.", "the costophrenic angles are sharp without effusion."],
    "Consolidation": ["no focal consolidation.", "no focal airspace consolidation.", "there is no focal consolidation."],
    "Edema": ["no pulmonary edema.", "there is no pulmonary edema.", "no evidence of pulmonary edema."],
    "Cardiomegaly": ["the heart size is normal.", "heart size is within normal limits.", "the heart is not enlarged.", "normal heart size."],
    "Enlarged Cardiomediastinum": ["the cardiomediastinal silhouette is within normal limits.", "normal cardiomediastinal silhouette.",
                                   "the mediastinal contours are normal."],
}
COMBINED_NEG = ["no pleural effusion or pneumothorax.", "no pneumothorax or pleural effusion.", "there is no pleural effusion or pneumothorax.",
                "no effusion or pneumothorax is seen."]
# The regions a negative statement is about, so that every sentence of a report belongs to a region
# and a region-guided generator can learn to write it (edema is read at the hila, a pneumothorax at
# the apices, bones at the spine and clavicles).
LUNGS = ("right lung", "left lung")
HILA = ("right hilar structures", "left hilar structures")
ANGLES = ("right costophrenic angle", "left costophrenic angle")
APICES = ("right apical zone", "left apical zone")
BONY = ("spine", "right clavicle", "left clavicle")
CLEAR = ["the lungs are clear.", "lungs are clear bilaterally.", "the lungs are well expanded and clear.", "clear lungs."]
BONES = ["no acute osseous abnormality.", "the osseous structures are unremarkable.", "visualized osseous structures are intact.",
         "no acute bony abnormality."]
NORMAL_IMPRESSION = ["no acute cardiopulmonary process.", "no acute cardiopulmonary abnormality.", "normal chest radiograph.",
                     "no acute intrathoracic process.", "no active disease."]

INDICATIONS = {
    "effusion": ["shortness of breath.", "dyspnea.", "evaluate for pleural effusion.", "decreased breath sounds at the base."],
    "pneumothorax": ["chest pain.", "evaluate for pneumothorax.", "status post line placement, evaluate for pneumothorax.", "sudden onset dyspnea."],
    "consolidation": ["fever and cough.", "cough, evaluate for pneumonia.", "productive cough and fever.", "leukocytosis, rule out pneumonia."],
    "atelectasis": ["postoperative, shortness of breath.", "hypoxia.", "decreased breath sounds."],
    "edema": ["congestive heart failure.", "dyspnea, history of heart failure.", "lower extremity edema and shortness of breath.", "volume overload."],
    "cardiomegaly": ["congestive heart failure.", "dyspnea on exertion.", "history of cardiomyopathy."],
    "mediastinum": ["chest pain radiating to the back.", "evaluate mediastinum.", "hypertension, chest pain."],
    "nodule": ["follow-up pulmonary nodule.", "cough, former smoker.", "weight loss."],
    "mass": ["hemoptysis.", "weight loss and cough.", "smoker with cough."],
    "granuloma": ["cough.", "routine evaluation.", "history of tuberculosis exposure."],
    "fracture": ["fall, chest wall pain.", "trauma.", "rib pain after fall."],
    "emphysema": ["COPD exacerbation.", "shortness of breath, history of COPD.", "chronic cough, smoker."],
    "devices": ["line placement.", "intubated patient.", "endotracheal tube placement.", "pacemaker check.", "post-operative evaluation."],
}
GENERIC_INDICATIONS = ["preoperative evaluation.", "chest pain.", "cough.", "routine screening.", "shortness of breath.",
                       "pre-employment screening.", "follow-up.", "fever."]
NTH = {1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 5: "5th", 6: "6th", 7: "7th", 8: "8th", 9: "9th", 10: "10th"}


def _lobe_regions(lobe: str) -> tuple[str, ...]:
    side = lobe.split()[0]
    zones = {"upper": ("upper",), "middle": ("mid", "lower"), "lower": ("lower",)}[lobe.split()[1]]
    if lobe == "left upper lobe":
        zones = ("upper", "mid")
    return tuple(f"{side} {z} lung zone" for z in zones) + (f"{side} lung",)


def _side_adj(side: str) -> tuple[str, str]:
    if side == "bilateral":
        return "bibasilar", "lung bases"
    return f"{side} basilar", f"{side} lung base"


def finding_sentences(f: Finding, rng: np.random.Generator) -> list[Sentence]:
    """Findings-section sentences for one inserted finding."""
    k = f.kind
    if k == "effusion":
        sev = f.severity
        regions = []
        for s in _sides(f.side):
            regions += [f"{s} costophrenic angle", f"{s} hemidiaphragm", f"{s} lung"]
            if sev != "small":
                regions.append(f"{s} lower lung zone")
            if sev == "large":
                regions.append(f"{s} mid lung zone")
        bank = EFFUSION["bilateral"] if f.side == "bilateral" else EFFUSION["one"]
        text = _pick(rng, bank).format(sev=sev, side=f.side)
        return [Sentence(text, {"Pleural Effusion": 1}, tuple(regions), side=f.side, severity=sev, location="base bases basilar posterior")]
    if k == "pneumothorax":
        s = f.side
        regions = [f"{s} lung", f"{s} apical zone", f"{s} upper lung zone"] + ([f"{s} mid lung zone"] if f.severity != "small" else [])
        return [Sentence(_pick(rng, PNEUMOTHORAX).format(sev=f.severity, side=s), {"Pneumothorax": 1}, tuple(regions), side=s,
                         severity=f.severity, location="apical apex lateral")]
    if k == "consolidation":
        lobe = f.location
        pattern = "patchy " if f.params.get("pattern") == "patchy" and rng.random() < 0.6 else ""
        regions = _lobe_regions(lobe)
        if f.params.get("pneumonia"):
            if rng.random() < 0.5:
                text = _pick(rng, PNEUMONIA_POS).format(lobe=lobe)
                labels = {"Consolidation": 1, "Pneumonia": 1} if "consolidation" in text else {"Pneumonia": 1}
                return [Sentence(text, labels, regions, side=f.side, location=lobe)]
            text = _pick(rng, PNEUMONIA_UNC).format(lobe=lobe)
            f.params["pneumonia_uncertain"] = True  # the impression must hedge too
            labels = {"Pneumonia": -1, "Consolidation": 1} if "consolidation" in text else {"Pneumonia": -1, "Lung Opacity": 1}
            return [Sentence(text, labels, regions, side=f.side, location=lobe)]
        return [Sentence(_pick(rng, CONSOLIDATION).format(pattern=pattern, lobe=lobe), {"Consolidation": 1}, regions, side=f.side, location=lobe)]
    if k == "atelectasis":
        pattern = f.params.get("pattern", "plate")
        adj, base = _side_adj(f.side)
        regions = []
        for s in _sides(f.side):
            regions += [f"{s} lower lung zone", f"{s} lung"] + ([f"{s} hemidiaphragm"] if pattern == "basal" else [])
        text = _pick(rng, ATELECTASIS[pattern]).format(side_adj=adj, base=base, side_word=f.side)
        return [Sentence(text, {"Atelectasis": 1}, tuple(regions), side=f.side, location="lower base bases basilar")]
    if k == "edema":
        regions = ("right hilar structures", "left hilar structures", "right lung", "left lung", "right mid lung zone", "left mid lung zone",
                   "right lower lung zone", "left lower lung zone")
        return [Sentence(_pick(rng, EDEMA[f.severity]), {"Edema": 1}, regions, severity=f.severity, location="perihilar hilar")]
    if k in ("nodule", "mass", "granuloma"):
        zone = f.location
        size = f.params["size_mm"]
        regions = (zone, f"{f.side} lung")
        if k == "granuloma":
            return [Sentence(_pick(rng, GRANULOMA).format(zone=zone), {}, regions, side=f.side, location=zone)]
        bank, sz = (NODULE, size) if k == "nodule" else (MASS, round(size / 10, 1))
        return [Sentence(_pick(rng, bank).format(zone=zone, size=sz), {"Lung Lesion": 1}, regions, side=f.side, location=zone)]
    if k == "fracture":
        rib = f.params["rib"]
        zone = "upper" if rib <= 5 else ("mid" if rib <= 7 else "lower")
        text = _pick(rng, FRACTURE[f.severity]).format(side=f.side, nth=NTH[rib])
        return [Sentence(text, {"Fracture": 1}, (f"{f.side} {zone} lung zone", f"{f.side} lung"), side=f.side, location="lateral")]
    if k == "emphysema":
        return [Sentence(_pick(rng, EMPHYSEMA), {}, ("right lung", "left lung", "right hemidiaphragm", "left hemidiaphragm"))]
    if k == "cardiomegaly":
        return [Sentence(_pick(rng, CARDIOMEGALY[f.severity]), {"Cardiomegaly": 1}, ("cardiac silhouette",), severity=f.severity)]
    if k == "mediastinum":
        return [Sentence(_pick(rng, MEDIASTINUM), {"Enlarged Cardiomediastinum": 1}, ("upper mediastinum", "mediastinum"))]
    if k == "devices":
        out = []
        for name in f.params["kinds"]:
            d = round(f.params.get("ett_tip_above_carina_mm", 45) / 10, 1)
            out.append(Sentence(_pick(rng, DEVICES[name]).format(d=d), {"Support Devices": 1}, DEVICE_REGIONS[name]))
        return out
    raise ValueError(k)


def impression_sentence(f: Finding, rng: np.random.Generator) -> Sentence:
    """A shorter restatement for the impression."""
    side = f.side
    if f.kind == "effusion":
        t = _pick(rng, ["{sev} {side} pleural effusion.", "{side} pleural effusion.", "{sev} {side} effusion."])
        t = t.replace("{side}", "bilateral" if side == "bilateral" else side).replace("{sev}", f.severity)
        if side == "bilateral":
            t = t.replace("effusion.", "effusions.")
        return Sentence(t, {"Pleural Effusion": 1})
    if f.kind == "pneumothorax":
        return Sentence(_pick(rng, [f"{f.severity} {side} pneumothorax.", f"{side} pneumothorax."]), {"Pneumothorax": 1})
    if f.kind == "cardiomegaly":
        return Sentence(_pick(rng, ["cardiomegaly.", f"{f.severity} cardiomegaly.", "enlarged heart."]), {"Cardiomegaly": 1})
    if f.kind == "edema":
        return Sentence(_pick(rng, ["pulmonary edema.", f"{f.severity} pulmonary edema.", "findings of congestive heart failure with pulmonary edema."]), {"Edema": 1})
    if f.kind == "consolidation":
        if f.params.get("pneumonia_uncertain"):
            return Sentence(_pick(rng, [f"{f.location} opacity, possibly pneumonia.", f"{f.location} opacity, concerning for pneumonia."]),
                            {"Pneumonia": -1, "Lung Opacity": 1})
        if f.params.get("pneumonia"):
            return Sentence(f"{f.location} pneumonia.", {"Pneumonia": 1})
        return Sentence(f"{f.location} consolidation.", {"Consolidation": 1})
    if f.kind == "atelectasis":
        return Sentence(f"{_side_adj(side)[0]} atelectasis.", {"Atelectasis": 1})
    if f.kind in ("nodule", "mass"):
        return Sentence(_pick(rng, [f"{f.location} {f.kind}.", f"{f.kind} in the {f.location}; CT recommended for further evaluation."]), {"Lung Lesion": 1})
    if f.kind == "fracture":
        return Sentence(f"{side} {NTH[f.params['rib']]} rib fracture.", {"Fracture": 1})
    if f.kind == "emphysema":
        return Sentence(_pick(rng, ["emphysema.", "hyperinflation, consistent with COPD."]), {})
    if f.kind == "mediastinum":
        return Sentence(_pick(rng, ["widened mediastinum.", "mediastinal widening; consider CT for further evaluation."]), {"Enlarged Cardiomediastinum": 1})
    if f.kind == "devices":
        return Sentence(_pick(rng, ["support devices in appropriate position.", "lines and tubes as described."]), {"Support Devices": 1})
    return Sentence("", {})


class SentenceBank:
    """Real report sentences indexed by their labeler output, for ``--sentence-bank``."""

    SIDE_WORDS = ("right", "left", "bilateral", "bibasilar")
    # canonical severity of the words real reports use
    SIZE_WORDS = {"small": "small", "tiny": "small", "trace": "small", "minimal": "small", "moderate": "moderate",
                  "moderately": "moderate", "large": "large", "mild": "mild", "mildly": "mild", "severe": "severe",
                  "severely": "severe", "marked": "severe", "markedly": "severe", "massive": "severe"}
    LOCATION_WORDS = ("upper", "middle", "mid", "lower", "apical", "apex", "base", "basilar", "bases", "lingula", "lingular",
                      "hilar", "perihilar", "retrocardiac", "lateral", "posterior", "anterior", "medial")
    # a synthetic study has no prior: sentences that compare with one would be false
    TEMPORAL_WORDS = ("again", "stable", "unchanged", "increased", "decreased", "interval", "previous", "previously", "prior",
                      "persistent", "persists", "redemonstrated", "improved", "worsened", "worsening", "resolved", "new",
                      "since", "compared", "technique")

    def __init__(self, by_labels: dict[frozenset, list[str]]):
        self.by_labels = by_labels

    @classmethod
    def from_manifest(cls, path: str | Path) -> "SentenceBank":
        from crrg.errors import InputError
        from crrg.records import read_manifest

        try:
            from crrg.labeler import label_report
        except ImportError as exc:
            raise InputError("--sentence-bank needs the CheXpert labeler (crrg.labeler), which is not available in this installation") from exc
        try:
            from crrg.text import split_sentences
        except ImportError:
            def split_sentences(text: str) -> list[str]:
                return [s.strip() + "." for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 3]
        by_labels: dict[frozenset, list[str]] = {}
        seen: set[str] = set()
        for record in read_manifest(path, resolve_paths=False):
            for sent in split_sentences(record.report):
                sent = sent.strip()
                if not sent or sent.lower() in seen or "xxxx" in sent.lower():
                    continue
                seen.add(sent.lower())
                labels = label_report(sent)
                key = frozenset((k, v) for k, v in labels.items() if v is not None and k != "No Finding")
                if key:
                    by_labels.setdefault(key, []).append(sent)
        log.info("sentence bank %s: %d labelled sentences", path, sum(len(v) for v in by_labels.values()))
        return cls(by_labels)

    def draw(self, s: Sentence, rng: np.random.Generator) -> str | None:
        """A real sentence with exactly these labels whose side, size and location words do not contradict the study."""
        options = self.by_labels.get(frozenset(s.labels.items()), [])
        ok = [text for text in options if self._fits(text, s)]
        if not ok:
            return None
        return ok[int(rng.integers(len(ok)))]

    def _fits(self, text: str, s: Sentence) -> bool:
        words = set(re.findall(r"[a-z]+", text.lower()))
        if words & set(self.TEMPORAL_WORDS):
            return False
        sides = words & set(self.SIDE_WORDS)
        if s.side:
            allowed = {s.side} | ({"bibasilar"} if s.side == "bilateral" else set())
            if not sides or sides - allowed:
                return False
        elif sides:
            return False
        sizes = {self.SIZE_WORDS[w] for w in words if w in self.SIZE_WORDS}
        if sizes and sizes != {s.severity}:
            return False
        places = words & set(self.LOCATION_WORDS)
        if places:
            allowed_places = set(re.findall(r"[a-z]+", s.location.lower()))
            if "mid" in allowed_places:
                allowed_places.add("middle")
            if not places <= allowed_places:
                return False
        return True


@dataclass
class Report:
    indication: str
    findings: str
    impression: str
    labels: dict[str, int | None]
    sentences: list[Sentence]  # findings-section sentences, with regions


def write_report(findings: list[Finding], rng: np.random.Generator, bank: SentenceBank | None = None) -> Report:
    """Findings + impression + indication and the CheXpert labels they state."""
    sentences: list[Sentence] = []
    for f in findings:
        sentences += finding_sentences(f, rng)
    kinds = {f.kind for f in findings}
    negatives: list[Sentence] = []
    if "cardiomegaly" not in kinds:
        if "mediastinum" not in kinds and rng.random() < 0.6:
            text = _pick(rng, NEG["Enlarged Cardiomediastinum"])
            labels = {"Enlarged Cardiomediastinum": 0}
            if "cardiomediastinal" in text:  # ... also says the heart is not enlarged (as CheXpert labelers read it)
                labels["Cardiomegaly"] = 0
            negatives.append(Sentence(text, labels, ("cardiac silhouette", "mediastinum"), abnormal=False))
        else:
            negatives.append(Sentence(_pick(rng, NEG["Cardiomegaly"]), {"Cardiomegaly": 0}, ("cardiac silhouette",), abnormal=False))
    lung_kinds = kinds & {"consolidation", "edema", "atelectasis", "nodule", "mass"}
    if not lung_kinds:
        if rng.random() < 0.6:
            negatives.append(Sentence(_pick(rng, CLEAR), {}, LUNGS, abnormal=False))
        else:
            negatives.append(Sentence(_pick(rng, NEG["Consolidation"]), {"Consolidation": 0}, LUNGS, abnormal=False))
    elif "consolidation" not in kinds and rng.random() < 0.5:
        negatives.append(Sentence(_pick(rng, NEG["Consolidation"]), {"Consolidation": 0}, LUNGS, abnormal=False))
    if "edema" not in kinds and ("cardiomegaly" in kinds or rng.random() < 0.2):
        negatives.append(Sentence(_pick(rng, NEG["Edema"]), {"Edema": 0}, HILA, abnormal=False))
    pleural = kinds & {"effusion", "pneumothorax"}
    if not pleural:
        negatives.append(Sentence(_pick(rng, COMBINED_NEG), {"Pleural Effusion": 0, "Pneumothorax": 0},
                                  ANGLES, abnormal=False))
    elif "effusion" not in kinds:
        negatives.append(Sentence(_pick(rng, NEG["Pleural Effusion"]), {"Pleural Effusion": 0}, ANGLES, abnormal=False))
    elif "pneumothorax" not in kinds:
        negatives.append(Sentence(_pick(rng, NEG["Pneumothorax"]), {"Pneumothorax": 0}, APICES, abnormal=False))
    if "fracture" not in kinds and rng.random() < 0.5:
        negatives.append(Sentence(_pick(rng, BONES), {}, BONY, abnormal=False))
    if bank is not None:
        for s in sentences + negatives:
            if rng.random() < 0.5:
                real = bank.draw(s, rng)
                if real:
                    s.text = real
    # order: devices first, then lungs, pleura, heart/mediastinum, bones (the order of a dictated report)
    heart_first = rng.random() < 0.4
    heart = [s for s in sentences + negatives if set(s.labels) & {"Cardiomegaly", "Enlarged Cardiomediastinum"}]
    rest = [s for s in sentences + negatives if s not in heart]
    devices = [s for s in rest if "Support Devices" in s.labels]
    rest = [s for s in rest if s not in devices]
    ordered = devices + (heart + rest if heart_first else rest + heart)
    findings_text = " ".join(_cap(s.text) for s in ordered)
    if findings:
        imp = [impression_sentence(f, rng) for f in findings if f.kind != "granuloma" and not f.params.get("with_edema")]
        imp = [s for s in imp if s.text]
        if not imp:
            imp = [Sentence(_pick(rng, NORMAL_IMPRESSION), {})]
        impression_text = " ".join(_cap(s.text) for s in imp)
    else:
        imp = [Sentence(_pick(rng, NORMAL_IMPRESSION), {})]
        impression_text = _cap(imp[0].text)
    labels: dict[str, int | None] = {n: None for n in CHEXPERT_14}
    for s in ordered + imp:
        if s.abnormal and re.search(r"(?<!nodular )opacit|haz", s.text.lower()):
            s.labels.setdefault("Lung Opacity", 1)
        for name, value in s.labels.items():
            old = labels[name]
            # a positive anywhere wins over an uncertain, an uncertain over a negative
            rank = {1: 3, -1: 2, 0: 1, None: 0}
            if rank[value] > rank[old]:
                labels[name] = value
    if all(f.kind == "devices" for f in findings):  # a granuloma or hyperinflation is a finding too; lines are not
        labels["No Finding"] = 1
    related = [f.kind for f in findings if f.kind in INDICATIONS]
    if related and rng.random() < 0.75:
        indication = _pick(rng, INDICATIONS[_pick(rng, related)])
    else:
        indication = _pick(rng, GENERIC_INDICATIONS)
    return Report(_cap(indication), findings_text, impression_text, labels, ordered)
