"""The one record format: :class:`StudyRecord`, stored as JSONL manifests.

Every dataset reader produces StudyRecords and every model consumes them, so adding a dataset
means writing one reader and nothing else. A manifest is a JSONL file whose first line is a header
``{"crrg_manifest": SCHEMA_VERSION}`` and whose other lines are one study each. Reading validates
every line and names the file and line of the first bad one.

Image paths are stored as written. Relative paths are relative to the manifest's folder, so a
folder of images with its manifest can be moved as a whole; :func:`read_manifest` resolves them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from crrg.errors import ManifestError
from crrg.io import atomic_open, iter_jsonl
from crrg.observations import ANATOMICAL_REGIONS, CHEXPERT_14, FRONTAL_VIEWS, LABEL_VALUES, LATERAL_VIEWS, VIEWS

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test", "unassigned")
HEADER_KEY = "crrg_manifest"


@dataclass
class ImageRef:
    path: str
    view: str = "unknown"


@dataclass
class Region:
    """One anatomical region of one image: its box in pixels of that image and what the report says."""

    name: str
    image: int  # index into StudyRecord.images
    box: list[float]  # [x1, y1, x2, y2] in pixels
    abnormal: bool = False
    sentences: list[str] = field(default_factory=list)


def empty_labels() -> dict[str, int | None]:
    return {name: None for name in CHEXPERT_14}


@dataclass
class StudyRecord:
    id: str
    patient_id: str | None = None
    images: list[ImageRef] = field(default_factory=list)
    indication: str = ""
    comparison: str = ""
    findings: str = ""
    impression: str = ""
    labels: dict[str, int | None] = field(default_factory=empty_labels)
    split: str = "unassigned"
    regions: list[Region] | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # reader-specific extras (e.g. IU X-Ray MeSH terms)

    @property
    def report(self) -> str:
        """Findings and impression as one text, the usual target of report generation."""
        return " ".join(part.strip() for part in (self.findings, self.impression) if part and part.strip())

    def frontal_images(self) -> list[ImageRef]:
        return [im for im in self.images if im.view in FRONTAL_VIEWS]

    def frontal_image(self) -> ImageRef | None:
        """The image frontal-view models read (:func:`crrg.observations.frontal_index`, the one rule);
        None for a study of lateral films only."""
        from crrg.observations import frontal_index

        index = frontal_index([im.view for im in self.images])
        return None if index is None else self.images[index]

    def lateral_images(self) -> list[ImageRef]:
        return [im for im in self.images if im.view in LATERAL_VIEWS]

    def to_dict(self) -> dict[str, Any]:
        # Built by hand: dataclasses.asdict deep-copies and dominated writing a full-size MIMIC manifest.
        d: dict[str, Any] = {
            "id": self.id, "patient_id": self.patient_id,
            "images": [{"path": im.path, "view": im.view} for im in self.images],
            "indication": self.indication, "comparison": self.comparison,
            "findings": self.findings, "impression": self.impression,
            "labels": dict(self.labels), "split": self.split,
        }
        if self.regions is not None:
            d["regions"] = [{"name": r.name, "image": r.image, "box": list(r.box), "abnormal": r.abnormal,
                             "sentences": list(r.sentences)} for r in self.regions]
        if self.meta:
            d["meta"] = dict(self.meta)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StudyRecord":
        """Build and validate a record; raises ValueError naming the offending field."""
        if not isinstance(d, dict):
            raise ValueError("a record must be a JSON object")
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}")
        if not isinstance(d.get("id"), str) or not d["id"]:
            raise ValueError("'id' must be a non-empty string")
        images = []
        for i, im in enumerate(d.get("images") or []):
            if isinstance(im, str):
                im = {"path": im}
            if not isinstance(im, dict) or not isinstance(im.get("path"), str):
                raise ValueError(f"images[{i}] must be an object with a string 'path'")
            view = im.get("view", "unknown")
            if view not in VIEWS:
                raise ValueError(f"images[{i}].view {view!r} is not one of {list(VIEWS)}")
            images.append(ImageRef(path=im["path"], view=view))
        labels = empty_labels()
        raw_labels = d.get("labels") or {}
        if not isinstance(raw_labels, dict):
            raise ValueError("'labels' must be an object")
        for name, value in raw_labels.items():
            if name not in labels:
                raise ValueError(f"unknown label {name!r}; expected the CheXpert-14 names")
            if isinstance(value, float) and value == int(value):
                value = int(value)
            if value not in LABEL_VALUES or isinstance(value, bool):
                raise ValueError(f"label {name!r} has value {value!r}; expected 1, 0, -1 or null")
            labels[name] = value
        split = d.get("split", "unassigned")
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {list(SPLITS)}")
        regions = None
        if d.get("regions") is not None:
            regions = []
            for i, r in enumerate(d["regions"]):
                if not isinstance(r, dict):
                    raise ValueError(f"regions[{i}] must be an object")
                if r.get("name") not in ANATOMICAL_REGIONS:
                    raise ValueError(f"regions[{i}].name {r.get('name')!r} is not a Chest ImaGenome region")
                box = r.get("box")
                if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
                    raise ValueError(f"regions[{i}].box must be [x1, y1, x2, y2]")
                if box[2] < box[0] or box[3] < box[1]:
                    raise ValueError(f"regions[{i}].box {box} has x2 < x1 or y2 < y1")
                image = r.get("image", 0)
                if not isinstance(image, int) or not 0 <= image < max(len(images), 1):
                    raise ValueError(f"regions[{i}].image {image!r} does not index an image of the record")
                regions.append(Region(name=r["name"], image=image, box=[float(v) for v in box],
                                      abnormal=bool(r.get("abnormal", False)),
                                      sentences=[str(s) for s in r.get("sentences") or []]))
        text = {}
        for key in ("indication", "comparison", "findings", "impression"):
            value = d.get(key) or ""
            if not isinstance(value, str):
                raise ValueError(f"'{key}' must be a string")
            text[key] = value
        patient = d.get("patient_id")
        return cls(id=d["id"], patient_id=None if patient is None else str(patient), images=images,
                   labels=labels, split=split, regions=regions, meta=dict(d.get("meta") or {}), **text)


def _resolve(record: StudyRecord, root: Path) -> StudyRecord:
    for im in record.images:
        if not os.path.isabs(im.path):
            im.path = str(root / im.path)
    return record


def iter_manifest(path: str | os.PathLike, resolve_paths: bool = True) -> Iterator[StudyRecord]:
    """Yield the records of a manifest, validating each line; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    root = path.resolve().parent
    for lineno, obj in iter_jsonl(path, error=ManifestError):
        if lineno == 1 and isinstance(obj, dict) and HEADER_KEY in obj:
            version = obj[HEADER_KEY]
            if version != SCHEMA_VERSION:
                raise ManifestError(f"{path}: schema version {version} is not supported (this crrg reads {SCHEMA_VERSION})")
            continue
        try:
            record = StudyRecord.from_dict(obj)
        except ValueError as exc:
            raise ManifestError(f"{path}:{lineno}: {exc}") from None
        yield _resolve(record, root) if resolve_paths else record


def report_of_line(obj: dict[str, Any], field: str = "report") -> str | None:
    """The report text of a JSONL line: ``field`` if present, else findings + impression (a manifest
    record or ``crrg report`` output); ``None`` when the line has neither. A null field is ""."""
    if field in obj:
        return "" if obj[field] is None else obj[field]
    if "findings" in obj or "impression" in obj:
        return " ".join(str(obj.get(k) or "").strip() for k in ("findings", "impression")).strip()
    return None


def read_manifest(path: str | os.PathLike, split: str | None = None, resolve_paths: bool = True) -> list[StudyRecord]:
    records = [r for r in iter_manifest(path, resolve_paths) if split is None or r.split == split]
    return records


def manifest_header() -> str:
    return json.dumps({HEADER_KEY: SCHEMA_VERSION}) + "\n"


def record_line(record: StudyRecord) -> str:
    return json.dumps(record.to_dict(), ensure_ascii=False) + "\n"


def write_manifest(path: str | os.PathLike, records: Iterable[StudyRecord]) -> int:
    """Write records atomically; returns how many were written. Duplicate ids are an error."""
    seen: set[str] = set()
    n = 0
    with atomic_open(path, "w") as handle:
        handle.write(manifest_header())
        for record in records:
            if record.id in seen:
                raise ManifestError(f"duplicate study id {record.id!r} while writing {path}")
            seen.add(record.id)
            handle.write(record_line(record))
            n += 1
    return n
