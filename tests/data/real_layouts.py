"""Small datasets in the real layouts (IU X-Ray / Open-i + R2Gen split, MIMIC-CXR-JPG + Chest ImaGenome),
with tiny images, for tests that run readers, region enrichment and training recipes end to end."""

from __future__ import annotations

import gzip
import json
import random
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from crrg.observations import ANATOMICAL_REGIONS, CHEXPERT_14

SENTENCES = [
    ("There is a small left pleural effusion.", "Pleural Effusion"), ("The lungs are clear.", None),
    ("No pneumothorax.", None), ("The cardiomediastinal silhouette is within normal limits.", None),
    ("The heart is mildly enlarged.", "Cardiomegaly"), ("Patchy opacity in the right lower lobe.", "Consolidation"),
    ("Calcified granuloma in the left upper lobe.", None), ("Bibasilar atelectasis.", "Atelectasis"),
    ("No acute osseous abnormality.", None), ("Mild pulmonary edema.", "Edema"),
]


def chest_image(size: int, seed: int) -> np.ndarray:
    """A uint8 'radiograph': bright body, two dark lungs, a bright heart, a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), 200.0)
    for cx in (0.3, 0.7):
        image[((xx - cx) / 0.16) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1] = 60
    image[((xx - 0.55) / 0.12) ** 2 + ((yy - 0.65) / 0.12) ** 2 < 1] = 170
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def report(rng: random.Random) -> tuple[str, str, dict]:
    picked = rng.sample(SENTENCES, 4)
    labels = {name: 1 for _, name in picked if name}
    findings = " ".join(s for s, _ in picked)
    impression = "No acute cardiopulmonary process." if not labels else f"{', '.join(labels)}."
    return findings, impression, labels


def make_iu_xray(root: Path, n: int = 12, size: int = 96, seed: int = 0) -> Path:
    """Open-i archive (NLMCXR_reports.tgz), R2Gen annotation.json (train / val / test), R2Gen
    images/CXR<n>_IM-<k>/0.png (frontal) and 1.png (lateral), DICOM metadata with views."""
    rng = random.Random(seed)
    xml_dir = root / "ecgen-radiology"
    xml_dir.mkdir(parents=True)
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    meta = ["imageid,Patient ID,View Position,filename"]
    for i in range(1, n + 1):
        study = f"CXR{i}_IM-{1000 + i:04d}"
        frontal, lateral = f"{study}-1001", f"{study}-2001"
        findings, impression, _ = report(rng)
        parents = "".join(f'<parentImage id="{p}"><figureId>F1</figureId></parentImage>' for p in (frontal, lateral))
        (xml_dir / f"{i}.xml").write_text(
            f'<?xml version="1.0" encoding="utf-8"?><eCitation><meta type="rr"/><uId id="CXR{i}"/><MedlineCitation>'
            f'<Article><Abstract><AbstractText Label="COMPARISON">None.</AbstractText>'
            f'<AbstractText Label="INDICATION">Cough</AbstractText><AbstractText Label="FINDINGS">{findings}</AbstractText>'
            f'<AbstractText Label="IMPRESSION">{impression}</AbstractText></Abstract></Article></MedlineCitation>'
            f'<MeSH><major>normal</major></MeSH>{parents}</eCitation>')
        folder = root / "images" / study
        folder.mkdir(parents=True)
        Image.fromarray(chest_image(size, i)).save(folder / "0.png")
        Image.fromarray(chest_image(size, 1000 + i).T.copy()).save(folder / "1.png")
        meta += [f"{frontal},{i},PA,x", f"{lateral},{i},LL,x"]
        part = "train" if i <= n - 4 else ("val" if i <= n - 2 else "test")
        split[part].append({"id": study, "report": f"{findings} {impression}", "image_path": [f"{study}/0.png", f"{study}/1.png"],
                            "split": part})
    with tarfile.open(root / "NLMCXR_reports.tgz", "w:gz") as tar:
        tar.add(xml_dir, arcname="ecgen-radiology")
    with gzip.open(root / "nlmcxr_dicom_metadata.csv.gz", "wt") as handle:
        handle.write("\n".join(meta) + "\n")
    (root / "annotation.json").write_text(json.dumps(split))
    return root


def region_boxes(size: int) -> dict[str, list[int]]:
    """Plausible boxes of the 29 regions on :func:`chest_image` (pixels of a size x size image)."""
    s = size
    boxes: dict[str, list[int]] = {}
    for side, x0 in (("right", 0.12), ("left", 0.52)):
        lung = [x0, 0.2, x0 + 0.36, 0.8]
        boxes[f"{side} lung"] = lung
        for k, zone in enumerate(("upper", "mid", "lower")):
            boxes[f"{side} {zone} lung zone"] = [x0, 0.2 + 0.2 * k, x0 + 0.36, 0.4 + 0.2 * k]
        boxes[f"{side} hilar structures"] = [x0 + 0.1, 0.4, x0 + 0.26, 0.6]
        boxes[f"{side} apical zone"] = [x0, 0.2, x0 + 0.36, 0.3]
        boxes[f"{side} costophrenic angle"] = [x0, 0.7, x0 + 0.12, 0.82]
        boxes[f"{side} hemidiaphragm"] = [x0, 0.75, x0 + 0.36, 0.85]
        boxes[f"{side} clavicle"] = [x0, 0.12, x0 + 0.36, 0.2]
    middle = {"trachea": [0.45, 0.05, 0.55, 0.35], "spine": [0.45, 0.05, 0.55, 0.95], "aortic arch": [0.45, 0.25, 0.6, 0.35],
              "mediastinum": [0.38, 0.2, 0.62, 0.8], "upper mediastinum": [0.4, 0.15, 0.6, 0.4], "svc": [0.4, 0.25, 0.48, 0.45],
              "cardiac silhouette": [0.4, 0.5, 0.7, 0.8], "cavoatrial junction": [0.4, 0.45, 0.48, 0.52],
              "right atrium": [0.38, 0.5, 0.5, 0.75], "carina": [0.46, 0.33, 0.54, 0.4], "abdomen": [0.1, 0.85, 0.9, 1.0]}
    boxes.update(middle)
    return {name: [round(v * s) for v in boxes[name]] for name in ANATOMICAL_REGIONS}


def make_mimic_imagenome(root: Path, n: int = 12, size: int = 96, seed: int = 0) -> tuple[Path, Path]:
    """MIMIC-CXR-JPG (tables, reports, JPGs: one PA + one lateral per study) and Chest ImaGenome silver
    scene graphs (folder layout) for the PA images; the official split puts the last studies in val / test."""
    rng = random.Random(seed)
    mimic, imagenome = root / "mimic-cxr-jpg", root / "chest-imagenome"
    graphs = imagenome / "silver_dataset" / "scene_graph"
    graphs.mkdir(parents=True)
    mimic.mkdir(parents=True)
    rows, meta, labels_rows = [], [], []
    boxes = region_boxes(size)
    for i in range(n):
        subject, study = 10000000 + i, 50000000 + i
        split = "train" if i < n - 4 else ("validate" if i < n - 2 else "test")
        folder = mimic / "files" / f"p{str(subject)[:2]}" / f"p{subject}"
        (folder / f"s{study}").mkdir(parents=True)
        findings, impression, labels = report(rng)
        (folder / f"s{study}.txt").write_text(f"FINAL REPORT\n FINDINGS: {findings}\n \n IMPRESSION: {impression}\n")
        labels_rows.append(f"{subject},{study}," + ",".join("1.0" if labels.get(c) else "" for c in CHEXPERT_14))
        for k, view in ((0, "PA"), (1, "LATERAL")):
            dicom = f"{i:04d}{k}-dicom"
            image = chest_image(size, 10 * i + k)
            Image.fromarray(image if k == 0 else image.T.copy()).save(folder / f"s{study}" / f"{dicom}.jpg")
            rows.append(f"{dicom},{study},{subject},{split}")
            meta.append(f"{dicom},{subject},{study},{view},{size},{size}")
        sentences = [s for s in findings.split(". ") if s]
        attributes = []
        from crrg.data.region_assignment import assign_regions

        by_region: dict[str, list[str]] = {}
        for sentence in sentences:
            sentence = sentence if sentence.endswith(".") else sentence + "."
            for region in assign_regions(sentence):
                by_region.setdefault(region, []).append(sentence)
        for name, phrases in by_region.items():
            abnormal = any(s.split()[0] not in ("No", "The") or "enlarged" in s for s in phrases)
            attributes.append({"bbox_name": name, "phrases": phrases,
                               "attributes": [["nlp|yes|abnormal" if abnormal else "nlp|yes|normal"] for _ in phrases]})
        objects = [{"bbox_name": name, "x1": 0, "y1": 0, "x2": 1, "y2": 1, "original_x1": b[0], "original_y1": b[1],
                    "original_x2": b[2], "original_y2": b[3]} for name, b in boxes.items()]
        (graphs / f"{i:04d}0-dicom_SceneGraph.json").write_text(json.dumps({"image_id": f"{i:04d}0-dicom",
                                                                            "objects": objects, "attributes": attributes}))
    with gzip.open(mimic / "mimic-cxr-2.0.0-split.csv.gz", "wt") as handle:
        handle.write("dicom_id,study_id,subject_id,split\n" + "\n".join(rows) + "\n")
    with gzip.open(mimic / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as handle:
        handle.write("dicom_id,subject_id,study_id,ViewPosition,Rows,Columns\n" + "\n".join(meta) + "\n")
    with gzip.open(mimic / "mimic-cxr-2.0.0-chexpert.csv.gz", "wt") as handle:
        handle.write("subject_id,study_id," + ",".join(CHEXPERT_14) + "\n" + "\n".join(labels_rows) + "\n")
    return mimic, imagenome
