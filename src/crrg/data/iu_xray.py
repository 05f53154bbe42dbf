"""IU X-Ray (Indiana University chest X-ray collection, Open-i) -> StudyRecords.

Two report sources are read:

* the Open-i archive ``NLMCXR_reports.tgz`` (read in place with :mod:`tarfile`) or its extracted
  ``ecgen-radiology/`` folder: one XML per study, sections in ``AbstractText Label=...``, images in
  ``parentImage id=...``, MeSH terms in ``<MeSH>``;
* the Kaggle pair ``indiana_reports.csv`` (uid, MeSH, Problems, image, indication, comparison,
  findings, impression) + ``indiana_projections.csv`` (uid, filename, projection).

Record ids are ``CXR<n>``; IU X-Ray has one study per patient, so ``patient_id`` is the study id.
Report text is stored exactly as in the source (``XXXX`` tokens included); cleaning is the
consumer's choice.

Images. Without an image folder, every image the report lists is kept under its Open-i file name
(``CXR2_IM-0652-1001.png``, or the Kaggle file name), relative to the manifest: putting the PNGs next
to the manifest makes them resolve, and reports-only work keeps the image count and views. With an
image folder, only images found there are kept (flat Open-i names, R2Gen's
``images/CXR2_IM-0652/0.png`` layout, or Kaggle ``images_normalized/2_IM-0652-1001.dcm.png``), stored
relative to the manifest; ``notes['images_missing']`` counts the rest.

Views come from the Kaggle ``projection`` column when present, otherwise from the ``View Position``
column of ``nlmcxr_dicom_metadata.csv(.gz)`` (about a third of its rows are blank, and those images
stay ``unknown``: the DICOM headers carry no other reliable view field).

Splits come from an R2Gen-style ``annotation.json`` (``{"train": [{"id": ...}], "val": ..., "test": ...}``;
ids are ``3321`` or ``CXR3321_IM-1588`` alike: the number after CXR is the study). Studies not in
the split file are ``unassigned``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from crrg.data.common import normalise_split, relative_to_manifest, require_file, view_of
from crrg.errors import InputError
from crrg.records import StudyRecord

log = logging.getLogger(__name__)

_SECTION_KEYS = {"INDICATION": "indication", "COMPARISON": "comparison", "FINDINGS": "findings", "IMPRESSION": "impression"}
_STUDY_NUMBER = re.compile(r"(\d+)")
_DUPLICATE_PREFIX = re.compile(r"^(CXR\d+)_\d+_(IM-.*)$")  # "CXR1_1_IM-0001-3001" -> "CXR1_IM-0001-3001"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dcm.png")


@dataclass
class _Study:
    id: str
    sections: dict[str, str]
    image_ids: list[str]
    meta: dict[str, object] = field(default_factory=dict)
    views: list[str | None] | None = None  # per image, from the Kaggle projections file
    image_files: list[str] | None = None  # per image, the Kaggle file name


def study_id_from_number(value: object) -> str:
    match = _STUDY_NUMBER.search(str(value))
    if not match:
        raise ValueError(f"no study number in {value!r}")
    return f"CXR{int(match.group(1))}"


# --------------------------------------------------------------------------------------------- XML

def _text(element: ET.Element | None) -> str:
    return "" if element is None else "".join(element.itertext())


def parse_openi_xml(data: bytes, where: str) -> _Study:
    """Parse one ``ecgen-radiology/<n>.xml``."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise InputError(f"{where}: not valid XML ({exc})") from None
    uid = root.find("uId")
    if uid is None or not uid.get("id"):
        raise InputError(f"{where}: no <uId id=...>; is this an Open-i IU X-Ray report?")
    sections = {key: "" for key in _SECTION_KEYS.values()}
    for abstract in root.iter("AbstractText"):
        key = _SECTION_KEYS.get((abstract.get("Label") or "").upper())
        if key:
            sections[key] = _text(abstract).strip()
    meta: dict[str, object] = {}
    mesh = root.find("MeSH")
    if mesh is not None:
        for child in mesh:
            meta.setdefault(f"mesh_{child.tag}", []).append(_text(child).strip())  # type: ignore[union-attr]
    meta.setdefault("mesh_major", [])
    meta.setdefault("mesh_minor", [])
    image_ids = [im.get("id") for im in root.iter("parentImage") if im.get("id")]
    return _Study(id=uid.get("id"), sections=sections, image_ids=image_ids, meta=meta)  # type: ignore[arg-type]


def _iter_xml_sources(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_dir():
        folder = path / "ecgen-radiology" if (path / "ecgen-radiology").is_dir() else path
        files = sorted(folder.glob("*.xml"))
        if not files:
            raise InputError(f"no Open-i report XML files in {folder}")
        for file in files:
            yield str(file), file.read_bytes()
        return
    try:
        archive = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"{path} is not a readable tar archive of Open-i reports ({exc})") from None
    with archive:
        found = False
        for member in archive:
            if member.isfile() and member.name.endswith(".xml"):
                found = True
                handle = archive.extractfile(member)
                if handle is not None:
                    yield f"{path}:{member.name}", handle.read()
        if not found:
            raise InputError(f"{path} holds no .xml reports; expected NLMCXR_reports.tgz (ecgen-radiology/*.xml)")


def _read_openi(path: Path) -> list[_Study]:
    return [parse_openi_xml(data, where) for where, data in _iter_xml_sources(path)]


# ------------------------------------------------------------------------------------------- Kaggle

def _read_csv(path: Path, required: tuple[str, ...], what: str):
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"{what} {path} lacks column(s) {missing}; it has {list(frame.columns)}")
    return frame


def _split_terms(value: str) -> list[str]:
    return [t.strip() for t in value.split(";") if t.strip()]


def _read_kaggle(reports: Path, projections: Path | None) -> list[_Study]:
    frame = _read_csv(reports, ("uid", "findings", "impression"), "Kaggle IU X-Ray reports file")
    images: dict[str, list[tuple[str, str]]] = {}
    if projections is not None:
        proj = _read_csv(projections, ("uid", "filename", "projection"), "Kaggle IU X-Ray projections file")
        for uid, filename, projection in zip(proj["uid"], proj["filename"], proj["projection"]):
            images.setdefault(uid.strip(), []).append((filename.strip(), projection))
    studies = []
    for row in frame.to_dict("records"):
        uid = row["uid"].strip()
        try:
            sid = study_id_from_number(uid)
        except ValueError:
            raise InputError(f"{reports}: uid {uid!r} is not a study number") from None
        sections = {key: (row.get(key) or "").strip() for key in _SECTION_KEYS.values()}
        meta: dict[str, object] = {"mesh_major": _split_terms(row.get("MeSH", "")), "mesh_minor": [],
                                   "problems": _split_terms(row.get("Problems", ""))}
        files = [f for f, _ in images.get(uid, [])]
        image_ids = [study_image_id(f) for f in files]
        studies.append(_Study(id=sid, sections=sections, image_ids=image_ids, meta=meta,
                              views=[p for _, p in images.get(uid, [])], image_files=files))
    return studies


def study_image_id(filename: str) -> str:
    """Kaggle file name ``1_IM-0001-4001.dcm.png`` -> Open-i image id ``CXR1_IM-0001-4001``."""
    stem = filename
    for suffix in (".dcm.png", ".png", ".jpg", ".dcm"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem if stem.startswith("CXR") else f"CXR{stem}"


# ---------------------------------------------------------------------------------- split and views

def read_split_file(path: str | os.PathLike) -> dict[str, str]:
    """R2Gen ``annotation.json`` -> {"CXR<n>": split}."""
    path = require_file(path, "split file")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"split file {path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f"split file {path} must be an object like {{\"train\": [...], \"val\": [...], \"test\": [...]}}")
    splits: dict[str, str] = {}
    for name, entries in data.items():
        split = normalise_split(name, f"split file {path}")
        if not isinstance(entries, list):
            raise InputError(f"split file {path}: {name!r} must be a list of entries")
        for entry in entries:
            raw = entry.get("id") if isinstance(entry, dict) else entry
            try:
                sid = study_id_from_number(raw)
            except ValueError:
                raise InputError(f"split file {path}: entry id {raw!r} in {name!r} has no study number") from None
            if splits.get(sid, split) != split:
                raise InputError(f"split file {path}: study {sid} is in both {splits[sid]!r} and {split!r}")
            splits[sid] = split
    return splits


def read_view_metadata(path: str | os.PathLike) -> dict[str, str]:
    """``nlmcxr_dicom_metadata.csv(.gz)`` -> {image id: view}; blank view positions are left out."""
    import pandas as pd

    path = require_file(path, "DICOM metadata file")
    try:
        frame = pd.read_csv(path, dtype=str, usecols=lambda c: c in ("imageid", "View Position"))
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read DICOM metadata {path}: {exc}") from None
    missing = [c for c in ("imageid", "View Position") if c not in frame.columns]
    if missing:
        raise InputError(f"DICOM metadata {path} lacks column(s) {missing}")
    frame = frame.dropna()
    return {image: view_of(v) for image, v in zip(frame["imageid"], frame["View Position"])}


class _ImageIndex:
    """Files under an image folder, found by Open-i image id in any of the common layouts."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise InputError(f"image folder {root} does not exist")
        self.root = root
        self.files: dict[str, str] = {}
        for folder, _, names in os.walk(root):
            rel = os.path.relpath(folder, root)
            for name in names:
                key = name if rel == "." else f"{rel}/{name}"
                self.files.setdefault(key, os.path.join(folder, name))
                self.files.setdefault(name, os.path.join(folder, name))  # flat name anywhere below

    def find(self, image_id: str, position: int, kaggle_file: str | None) -> str | None:
        names = [kaggle_file] if kaggle_file else []
        bare = image_id[3:] if image_id.startswith("CXR") else image_id
        for stem in (image_id, bare):
            names.extend(stem + suffix for suffix in _IMAGE_SUFFIXES)
        folder = image_id.rsplit("-", 1)[0]  # R2Gen: CXR2_IM-0652-1001 -> CXR2_IM-0652/<position>.png
        names.append(f"{folder}/{position}.png")
        for name in names:
            if name in self.files:
                return self.files[name]
        return None


# ------------------------------------------------------------------------------------------- reader

class IuXrayReader:
    """Iterable of IU X-Ray StudyRecords, sorted by study number."""

    def __init__(
        self,
        reports: str | os.PathLike,
        split_file: str | os.PathLike | None = None,
        metadata: str | os.PathLike | None = None,
        images: str | os.PathLike | None = None,
        projections: str | os.PathLike | None = None,
        manifest_dir: str | os.PathLike | None = None,
    ) -> None:
        reports = require_file(reports, "IU X-Ray reports")
        if reports.suffix.lower() == ".csv":
            if projections is None:
                sibling = reports.with_name("indiana_projections.csv")
                projections = sibling if sibling.is_file() else None
            self._studies = _read_kaggle(reports, require_file(projections, "projections file") if projections else None)
        else:
            if projections is not None:
                raise InputError("--projections goes with the Kaggle indiana_reports.csv, not with Open-i XML reports")
            self._studies = _read_openi(reports)
        self._studies.sort(key=lambda s: int(_STUDY_NUMBER.search(s.id).group(1)) if _STUDY_NUMBER.search(s.id) else 0)
        ids = Counter(s.id for s in self._studies)
        duplicated = [i for i, n in ids.items() if n > 1]
        if duplicated:
            raise InputError(f"{reports}: study id(s) {duplicated[:5]} occur more than once")
        self._splits = read_split_file(split_file) if split_file is not None else {}
        self._views = read_view_metadata(metadata) if metadata is not None else {}
        self._images = _ImageIndex(Path(images)) if images is not None else None
        self._manifest_dir = Path(manifest_dir) if manifest_dir is not None else None
        self.notes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._studies)

    def _view(self, study: _Study, i: int, image_id: str) -> str:
        if study.views is not None and view_of(study.views[i]) != "unknown":
            return view_of(study.views[i])
        view = self._views.get(image_id)
        if view is None:
            match = _DUPLICATE_PREFIX.match(image_id)
            view = self._views.get(f"{match.group(1)}_{match.group(2)}") if match else None
        return view or "unknown"

    def __iter__(self) -> Iterator[StudyRecord]:
        from crrg.records import ImageRef

        notes = Counter({"studies": 0, "images": 0, "images_missing": 0, "split_ids_without_report": 0})
        known = set()
        for study in self._studies:
            known.add(study.id)
            images = []
            for i, image_id in enumerate(study.image_ids):
                kaggle_file = study.image_files[i] if study.image_files else None
                if self._images is None:
                    path = kaggle_file or f"{image_id}.png"
                else:
                    found = self._images.find(image_id, i, kaggle_file)
                    if found is None:
                        notes["images_missing"] += 1
                        continue
                    path = relative_to_manifest(found, self._manifest_dir)
                images.append(ImageRef(path=path, view=self._view(study, i, image_id)))
            split = self._splits.get(study.id, "unassigned")
            notes[split] += 1
            notes["studies"] += 1
            notes["images"] += len(images)
            meta = dict(study.meta)
            meta["image_ids"] = list(study.image_ids)
            yield StudyRecord(id=study.id, patient_id=study.id, images=images, split=split, meta=meta, **study.sections)
        notes["split_ids_without_report"] = len(set(self._splits) - known)
        if notes["split_ids_without_report"]:
            log.warning("%d study id(s) of the split file have no report", notes["split_ids_without_report"])
        if notes["images_missing"]:
            log.warning("%d image(s) listed in the reports were not found under %s", notes["images_missing"],
                        self._images.root if self._images else "")
        self.notes = dict(notes)
