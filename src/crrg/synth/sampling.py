"""Which findings a synthetic study has: frequencies, severities, sides and the usual co-occurrences.

About a third of studies are normal. Abnormal studies have one to three primary findings, and the
dependencies radiologists expect are kept: edema often comes with small bilateral effusions and an
enlarged heart, pneumonia sometimes with a parapneumonic effusion, and sick (device-bearing) patients
are filmed AP at the bedside.
"""

from __future__ import annotations

import numpy as np

from crrg.synth.findings import Finding

NORMAL_FRACTION = 0.33
# relative frequency of each primary finding among abnormal studies
PRIMARY = {
    "cardiomegaly": 0.14, "effusion": 0.15, "pneumothorax": 0.08, "consolidation": 0.12, "atelectasis": 0.11,
    "edema": 0.08, "nodule": 0.07, "mass": 0.03, "granuloma": 0.06, "fracture": 0.05, "emphysema": 0.05,
    "mediastinum": 0.04, "devices": 0.10,
}
LOBES_BY_SIDE = {"right": ("right upper lobe", "right middle lobe", "right lower lobe"), "left": ("left upper lobe", "left lower lobe")}
ZONES = ("upper", "mid", "lower")


def _side(rng, bilateral: float = 0.0) -> str:
    if rng.random() < bilateral:
        return "bilateral"
    return "right" if rng.random() < 0.5 else "left"


def make_finding(kind: str, rng: np.random.Generator, base_ctr: float = 0.45) -> Finding:
    if kind == "cardiomegaly":
        sev = rng.choice(["mild", "moderate", "severe"], p=[0.45, 0.35, 0.2])
        ctr = {"mild": (0.52, 0.56), "moderate": (0.56, 0.61), "severe": (0.61, 0.68)}[sev]
        target = float(rng.uniform(*ctr))
        return Finding("cardiomegaly", str(sev), params={"target_ctr": round(target, 3), "scale": round(target / base_ctr, 3)})
    if kind == "mediastinum":
        return Finding("mediastinum", "", params={"scale": round(float(rng.uniform(1.5, 1.9)), 3)})
    if kind == "effusion":
        return Finding("effusion", str(rng.choice(["small", "moderate", "large"], p=[0.5, 0.35, 0.15])), _side(rng, 0.3))
    if kind == "pneumothorax":
        return Finding("pneumothorax", str(rng.choice(["small", "moderate", "large"], p=[0.45, 0.35, 0.2])), _side(rng))
    if kind == "consolidation":
        side = _side(rng)
        return Finding("consolidation", "", side, str(rng.choice(LOBES_BY_SIDE[side])),
                       {"pattern": str(rng.choice(["lobar", "patchy"])), "density": round(float(rng.uniform(0.75, 0.95)), 2),
                        "pneumonia": bool(rng.random() < 0.6)})
    if kind == "atelectasis":
        pattern = str(rng.choice(["plate", "basal"]))
        return Finding("atelectasis", "", _side(rng, 0.35), "", {"pattern": pattern})
    if kind == "edema":
        return Finding("edema", str(rng.choice(["mild", "moderate", "severe"], p=[0.4, 0.4, 0.2])), "bilateral")
    if kind in ("nodule", "mass", "granuloma"):
        side = _side(rng)
        size = {"nodule": (8, 24), "mass": (32, 55), "granuloma": (4, 7)}[kind]
        return Finding(kind, "", side, f"{side} {rng.choice(ZONES)} lung zone", {"size_mm": int(rng.integers(*size))})
    if kind == "fracture":
        return Finding("fracture", str(rng.choice(["acute", "healing"], p=[0.7, 0.3])), _side(rng), "", {"rib": int(rng.integers(4, 10))})
    if kind == "emphysema":
        return Finding("emphysema", "", "bilateral")
    if kind == "devices":
        kinds = []
        while not kinds:
            for name, p in (("ett", 0.4), ("central line", 0.5), ("pacemaker", 0.35), ("sternotomy", 0.25)):
                if rng.random() < p:
                    kinds.append(name)
        return Finding("devices", "", "", "", {"kinds": kinds})
    raise ValueError(kind)


def sample_findings(rng: np.random.Generator, base_ctr: float = 0.45) -> list[Finding]:
    """The findings of one study (empty = normal)."""
    if rng.random() < NORMAL_FRACTION:
        return []
    names = list(PRIMARY)
    probs = np.array([PRIMARY[n] for n in names])
    k = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    kinds = list(rng.choice(names, size=k, replace=False, p=probs / probs.sum()))
    if "edema" in kinds:
        if rng.random() < 0.5 and "cardiomegaly" not in kinds:
            kinds.append("cardiomegaly")
    if "nodule" in kinds and "mass" in kinds:
        kinds.remove("mass")
    if "pneumothorax" in kinds and "effusion" in kinds and rng.random() < 0.7:
        kinds.remove("effusion")
    out = [make_finding(k_, rng, base_ctr) for k_ in kinds]
    if "edema" in kinds and "effusion" not in kinds and rng.random() < 0.5:
        out.append(Finding("effusion", "small", "bilateral", params={"with_edema": True}))
    if "consolidation" in kinds and "effusion" not in kinds and rng.random() < 0.2:
        cons = next(f for f in out if f.kind == "consolidation")
        out.append(Finding("effusion", "small", cons.side))
    order = {k_: i for i, k_ in enumerate(("devices", "edema", "consolidation", "atelectasis", "nodule", "mass", "granuloma",
                                            "emphysema", "effusion", "pneumothorax", "cardiomegaly", "mediastinum", "fracture"))}
    out.sort(key=lambda f: order[f.kind])
    return out


def choose_view(findings: list[Finding], rng: np.random.Generator) -> str:
    """Inpatients with lines and tubes are filmed AP at the bedside; most others PA."""
    kinds = {f.kind for f in findings}
    p_ap = 0.8 if "devices" in kinds else (0.4 if kinds & {"edema", "pneumothorax"} else 0.15)
    return "AP" if rng.random() < p_ap else "PA"
