"""Real labelled radiographs for the finding classifier: NIH ChestX-ray14 and the COVID-19 collection.

Both datasets name their findings differently from CheXpert; this module is the one place the
mapping is stated, so training, the benchmark and the model card agree on it:

- NIH ChestX-ray14 (official ``Data_Entry_2017`` labels, ``|``-separated): Effusion -> Pleural
  Effusion, Mass and Nodule -> Lung Lesion, Infiltration -> Lung Opacity, Pleural_Thickening ->
  Pleural Other, Atelectasis / Cardiomegaly / Consolidation / Edema / Pneumonia / Pneumothorax by
  name, ``No Finding`` -> No Finding. Emphysema, Fibrosis and Hernia have no CheXpert name: they only
  make No Finding negative. NIH never labels Enlarged Cardiomediastinum, Fracture or Support
  Devices, so those are masked (unknown), not negative.
- COVID-19 collection (``metadata.jsonl`` ``finding``): ``No Finding`` -> No Finding positive,
  Pneumonia and Lung Opacity negative; every infection or ARDS (COVID-19, SARS, bacterial, viral,
  fungal, lipoid) -> Pneumonia and Lung Opacity positive, No Finding negative; ``todo`` (unlabelled)
  and lateral views are skipped; all other observations are masked.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

from crrg.clip.data import LabeledImage
from crrg.errors import InputError
from crrg.observations import CHEXPERT_14

NIH_TO_CHEXPERT: dict[str, str | None] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Effusion": "Pleural Effusion",
    "Emphysema": None,
    "Fibrosis": None,
    "Hernia": None,
    "Infiltration": "Lung Opacity",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Pleural_Thickening": "Pleural Other",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
}
# The CheXpert observations an NIH label can say something about (the rest are masked).
NIH_OBSERVATIONS: tuple[str, ...] = tuple(n for n in CHEXPERT_14 if n == "No Finding" or n in NIH_TO_CHEXPERT.values())
COVID_OBSERVATIONS: tuple[str, ...] = ("No Finding", "Lung Opacity", "Pneumonia")
COVID_SKIPPED_FINDINGS = frozenset({"todo", ""})
LATERAL_VIEWS = frozenset({"L", "LATERAL", "LL"})


def nih_to_chexpert(finding_labels: str) -> dict[str, int]:
    """NIH ``finding_labels`` (e.g. ``"Effusion|Mass"``) as 0/1 values over :data:`NIH_OBSERVATIONS`."""
    names = [n.strip() for n in finding_labels.split("|") if n.strip()]
    unknown = [n for n in names if n != "No Finding" and n not in NIH_TO_CHEXPERT]
    if unknown:
        raise InputError(f"unknown NIH label(s) {unknown}; expected {sorted(NIH_TO_CHEXPERT)} or 'No Finding'")
    positive = {NIH_TO_CHEXPERT[n] for n in names if n != "No Finding"} - {None}
    out = {n: int(n in positive) for n in NIH_OBSERVATIONS}
    out["No Finding"] = int(names == ["No Finding"])
    return out


def covid_to_chexpert(finding: str) -> dict[str, int] | None:
    """The COVID collection's ``finding`` as 0/1 values over :data:`COVID_OBSERVATIONS` (None: unlabelled)."""
    finding = finding.strip()
    if finding in COVID_SKIPPED_FINDINGS:
        return None
    normal = finding == "No Finding"
    return {"No Finding": int(normal), "Lung Opacity": int(not normal), "Pneumonia": int(not normal)}


def _item(path: Path, values: dict[str, int], labels: Sequence[str], item_id: str) -> LabeledImage:
    target = [float(values.get(n, 0)) for n in labels]
    mask = [1.0 if n in values else 0.0 for n in labels]
    return LabeledImage(path=str(path), target=target, mask=mask, id=item_id)


def read_nih14(root: str | Path, labels: Sequence[str] = CHEXPERT_14, split: str | None = None) -> list[LabeledImage]:
    """NIH images listed in ``root/labels14.csv`` (``split``: the path's first folder, e.g. ``train``)."""
    root = Path(root)
    table = root / "labels14.csv"
    if not table.is_file():
        raise InputError(f"{table} not found: pass the NIH folder that holds labels14.csv")
    items = []
    with table.open(newline="") as f:
        for row in csv.DictReader(f):
            if split is not None and Path(row["path"]).parts[0] != split:
                continue
            items.append(_item(root / row["path"], nih_to_chexpert(row["finding_labels"]), labels, row["path"]))
    if not items:
        raise InputError(f"no NIH images for split {split!r} in {table}")
    return items


def read_covid(root: str | Path, labels: Sequence[str] = CHEXPERT_14, frontal_only: bool = True) -> list[LabeledImage]:
    """Labelled frontal images of the COVID-19 collection (``root/metadata.jsonl``)."""
    root = Path(root)
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise InputError(f"{meta} not found: pass the folder of the COVID-19 collection")
    items = []
    for line in meta.read_text().splitlines():
        row = json.loads(line)
        values = covid_to_chexpert(row.get("finding", ""))
        if values is None or (frontal_only and str(row.get("view", "")).upper() in LATERAL_VIEWS):
            continue
        items.append(_item(root / row["image"], values, labels, row["image"]))
    return items
