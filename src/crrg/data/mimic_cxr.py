"""MIMIC-CXR-JPG -> StudyRecords, one per study, streamed.

Inputs, in PhysioNet's layout:

* ``<root>/mimic-cxr-2.0.0-split.csv.gz``: dicom_id, study_id, subject_id, split (train / validate / test);
* ``<root>/mimic-cxr-2.0.0-metadata.csv.gz``: dicom_id, ..., ViewPosition (optional: views stay unknown);
* ``<root>/mimic-cxr-2.0.0-chexpert.csv.gz``: subject_id, study_id and the 14 CheXpert columns with
  1.0 / 0.0 / -1.0 / blank (optional: labels stay null);
* reports ``<reports>/files/pNN/p<subject>/s<study>.txt`` from MIMIC-CXR (``reports`` defaults to root;
  it may also be PhysioNet's ``mimic-cxr-reports.zip``, read in place), split into sections with
  :func:`crrg.text.sections.extract_sections`.

Image paths are ``files/pNN/p<subject>/s<study>/<dicom_id>.jpg`` under ``root``, written relative to
the manifest. Their existence is not checked (a full check is 377k stat calls, and reports-only work
needs no images). Studies whose report file is missing are kept with empty text and counted in
``notes['reports_missing']``.

Scale: the tables are joined once with pandas (vectorised) and sorted by subject / study; records
are then produced study by study, so memory stays at the size of the tables, not of the reports.
Record ids are ``s<study_id>`` and patient ids ``p<subject_id>``, as in the file names.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Iterator

from crrg.data.common import normalise_split, relative_to_manifest, require_file, view_of
from crrg.errors import InputError
from crrg.observations import CHEXPERT_14
from crrg.records import ImageRef, StudyRecord
from crrg.text.sections import MAIN_SECTIONS, extract_sections

log = logging.getLogger(__name__)

SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
CHEXPERT_FILE = "mimic-cxr-2.0.0-chexpert.csv.gz"


def _find(root: Path, name: str) -> Path | None:
    """The table under root, compressed or not."""
    for candidate in (root / name, root / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_table(path: Path, columns: tuple[str, ...], dtypes: dict[str, str] | None = None):
    import pandas as pd

    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise InputError(f"{path} lacks column(s) {missing}; it has {list(header)}")
    try:
        return pd.read_csv(path, usecols=list(columns), dtype=dtypes, engine="pyarrow")
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


class _FolderReports:
    """Report texts under ``<folder>/files/pNN/p<subject>/s<study>.txt``."""

    def __init__(self, folder: Path) -> None:
        self.where = f"{folder}/files"
        self._folder = str(folder)

    def read(self, subject: str, study: int) -> str | None:
        path = os.path.join(self._folder, "files", f"p{subject[:2]}", f"p{subject}", f"s{study}.txt")
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return None


class _ZipReports:
    """Report texts inside ``mimic-cxr-reports.zip``, found by study id whatever the folder prefix."""

    def __init__(self, path: Path) -> None:
        self.where = str(path)
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"{path} is not a readable zip of MIMIC-CXR reports ({exc})") from None
        self._names: dict[int, str] = {}
        for name in self._zip.namelist():
            base = name.rsplit("/", 1)[-1]
            if base.startswith("s") and base.endswith(".txt") and base[1:-4].isdigit():
                self._names[int(base[1:-4])] = name
        if not self._names:
            raise InputError(f"{path} holds no s<study>.txt report files")

    def read(self, subject: str, study: int) -> str | None:
        name = self._names.get(study)
        return None if name is None else self._zip.read(name).decode("utf-8", errors="replace")


class MimicCxrReader:
    """Iterable of MIMIC-CXR StudyRecords sorted by subject and study."""

    def __init__(
        self,
        root: str | os.PathLike,
        reports: str | os.PathLike | None = None,
        manifest_dir: str | os.PathLike | None = None,
    ) -> None:
        import numpy as np

        root = require_file(root, "MIMIC-CXR-JPG folder")
        self._root = root
        reports_path = require_file(reports, "MIMIC-CXR reports") if reports is not None else root
        self._reports = _ZipReports(reports_path) if reports_path.is_file() else _FolderReports(reports_path)
        self._manifest_dir = Path(manifest_dir) if manifest_dir is not None else None
        split_path = _find(root, SPLIT_FILE)
        if split_path is None:
            raise InputError(f"{root} has no {SPLIT_FILE}; point --root at the MIMIC-CXR-JPG folder")
        images = _read_table(split_path, ("dicom_id", "study_id", "subject_id", "split"),
                             {"dicom_id": "str", "study_id": "int64", "subject_id": "int64", "split": "str"})
        metadata_path = _find(root, METADATA_FILE)
        if metadata_path is not None:
            meta = _read_table(metadata_path, ("dicom_id", "ViewPosition"), {"dicom_id": "str", "ViewPosition": "str"})
            images = images.merge(meta, on="dicom_id", how="left", validate="one_to_one")
        else:
            log.warning("no %s under %s: image views will be 'unknown'", METADATA_FILE, root)
            images["ViewPosition"] = None
        views = images["ViewPosition"].astype("object")
        view_names = {v: view_of(v) for v in views.dropna().unique()}
        mapped = views.map(view_names).astype("object")
        images["view"] = mapped.where(mapped.notna(), "unknown")
        raw_splits = {s: normalise_split(s, str(split_path)) for s in images["split"].astype("object").fillna("").unique()}
        images["split"] = images["split"].astype("object").fillna("").map(raw_splits)
        images = images.sort_values(["subject_id", "study_id", "dicom_id"], kind="stable")

        study_ids = images["study_id"].to_numpy()
        starts = np.flatnonzero(np.r_[True, study_ids[1:] != study_ids[:-1]])
        self._starts = starts
        self._ends = np.r_[starts[1:], len(study_ids)]
        self._study_ids = study_ids[starts]
        if len(np.unique(self._study_ids)) != len(self._study_ids):
            raise InputError(f"{split_path}: a study_id belongs to more than one subject_id")
        self._subject_ids = images["subject_id"].to_numpy()[starts]
        self._dicoms = images["dicom_id"].to_numpy()
        self._views = images["view"].to_numpy()
        self._splits = images["split"].to_numpy()

        self._labels: np.ndarray | None = None
        chexpert_path = _find(root, CHEXPERT_FILE)
        if chexpert_path is not None:
            labels = _read_table(chexpert_path, ("study_id",) + CHEXPERT_14)
            labels = labels.drop_duplicates("study_id").set_index("study_id").reindex(self._study_ids)
            try:
                values = labels[list(CHEXPERT_14)].to_numpy(dtype="float64")
            except ValueError as exc:
                raise InputError(f"{chexpert_path}: label values must be 1.0, 0.0, -1.0 or blank ({exc})") from None
            bad = ~(np.isnan(values) | np.isin(values, (1.0, 0.0, -1.0)))
            if bad.any():
                row, col = map(int, np.argwhere(bad)[0])
                raise InputError(f"{chexpert_path}: study {self._study_ids[row]} has {CHEXPERT_14[col]!r} = "
                                 f"{values[row, col]}; expected 1.0, 0.0, -1.0 or blank")
            self._labels = values
        else:
            log.warning("no %s under %s: labels will be null", CHEXPERT_FILE, root)
        self.notes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._study_ids)

    def __iter__(self) -> Iterator[StudyRecord]:
        import numpy as np

        notes = {"studies": 0, "images": 0, "reports_missing": 0, "train": 0, "val": 0, "test": 0, "unassigned": 0}
        # The root-relative prefix is the same for every image: compute it once, not 377k times.
        base = str(self._root) if self._manifest_dir is None else relative_to_manifest(self._root, self._manifest_dir)
        label_values = None
        if self._labels is not None:
            label_values = np.where(np.isnan(self._labels), 2, self._labels).astype(np.int8)  # 2 = not mentioned
        for i, study in enumerate(self._study_ids.tolist()):
            subject = str(int(self._subject_ids[i]))
            start, end = int(self._starts[i]), int(self._ends[i])
            folder = os.path.join(base, "files", f"p{subject[:2]}", f"p{subject}", f"s{study}")
            images = [ImageRef(path=os.path.join(folder, f"{d}.jpg"), view=v)
                      for d, v in zip(self._dicoms[start:end].tolist(), self._views[start:end].tolist())]
            splits = set(self._splits[start:end].tolist())
            split = splits.pop() if len(splits) == 1 else "unassigned"
            text = self._reports.read(subject, study)
            if text is None:
                notes["reports_missing"] += 1
                sections: dict[str, str] = {}
            else:
                sections = extract_sections(text)
            labels = {name: None for name in CHEXPERT_14}
            if label_values is not None:
                for name, value in zip(CHEXPERT_14, label_values[i].tolist()):
                    if value != 2:
                        labels[name] = value
            notes["studies"] += 1
            notes["images"] += len(images)
            notes[split] += 1
            yield StudyRecord(id=f"s{study}", patient_id=f"p{subject}", images=images, labels=labels, split=split,
                              **{key: sections.get(key, "") for key in MAIN_SECTIONS})
        if notes["reports_missing"]:
            log.warning("%d of %d studies have no report file in %s", notes["reports_missing"],
                        notes["studies"], self._reports.where)
        self.notes = notes
