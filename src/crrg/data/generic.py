"""A CSV or JSONL table the user writes -> StudyRecords.

One row per study. Columns (names are case-insensitive; the image and report column names can be
chosen):

* images: ``image`` / ``image_path`` / ``images`` / ``path`` by default, or any columns given with
  ``image_columns``; a cell may hold several paths separated by ``;`` (JSONL may use a list).
  Relative paths are relative to the table's folder (or ``images_root``) and are rewritten relative
  to the manifest; absolute paths are kept as written.
* text: ``report`` / ``text`` (free text, split into sections with
  :func:`crrg.text.sections.extract_sections`) and/or ``findings`` / ``impression`` (taken as they
  are; they win over sections found in ``report``). At least one text or image column is needed.
* optional: ``id`` (default ``row<N>``), ``patient_id``, ``split`` (train / val / validate / test),
  ``view`` (one view, or one per image separated by ``;``), ``indication``, ``comparison`` and
  label columns named exactly like the CheXpert-14 observations (1 / 0 / -1 / blank).

Errors name the file, the line and the column.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from crrg.data.common import normalise_split, relative_to_manifest, require_file, view_of
from crrg.errors import InputError
from crrg.io import iter_jsonl
from crrg.observations import CHEXPERT_14
from crrg.records import ImageRef, StudyRecord
from crrg.text.sections import extract_sections

DEFAULT_IMAGE_COLUMNS = ("image", "image_path", "images", "path")
REPORT_COLUMNS = ("report", "text")
TEXT_COLUMNS = ("findings", "impression", "indication", "comparison")


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip())


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for lineno, row in iter_jsonl(path):
            if not isinstance(row, dict):
                raise InputError(f"{path}:{lineno}: each line must be a JSON object")
            rows.append(row)
        return rows
    import pandas as pd

    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read table {path}: {exc}") from None
    return frame.to_dict("records")


def _label(value: Any, where: str, name: str) -> int | None:
    if _is_blank(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if number not in (1.0, 0.0, -1.0) or isinstance(value, bool):
        raise InputError(f"{where}: label column {name!r} has value {value!r}; expected 1, 0, -1 or blank")
    return int(number)


def _paths(value: Any) -> list[str]:
    if _is_blank(value):
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if not _is_blank(v)]
    return [p.strip() for p in str(value).split(";") if p.strip()]


class GenericReader:
    """Iterable of StudyRecords from a user's CSV / TSV / JSONL table, in file order."""

    def __init__(
        self,
        table: str | os.PathLike,
        image_columns: Sequence[str] | None = None,
        report_column: str | None = None,
        images_root: str | os.PathLike | None = None,
        manifest_dir: str | os.PathLike | None = None,
    ) -> None:
        self._path = require_file(table, "table")
        self._rows = _read_rows(self._path)
        if not self._rows:
            raise InputError(f"table {self._path} has no rows")
        columns: dict[str, str] = {}  # lower-case -> as written
        for row in self._rows:
            for name in row:
                columns.setdefault(str(name).strip().lower(), name)
        self._columns = columns
        if image_columns:
            missing = [c for c in image_columns if c.lower() not in columns]
            if missing:
                raise InputError(f"table {self._path} has no image column(s) {missing}; its columns are {list(columns.values())}")
            self._image_cols = [columns[c.lower()] for c in image_columns]
        else:
            self._image_cols = [columns[c] for c in DEFAULT_IMAGE_COLUMNS if c in columns]
        if report_column:
            if report_column.lower() not in columns:
                raise InputError(f"table {self._path} has no report column {report_column!r}; its columns are {list(columns.values())}")
            self._report_col: str | None = columns[report_column.lower()]
        else:
            self._report_col = next((columns[c] for c in REPORT_COLUMNS if c in columns), None)
        has_text = self._report_col is not None or "findings" in columns or "impression" in columns
        if not has_text and not self._image_cols:
            raise InputError(
                f"table {self._path} has neither image columns {list(DEFAULT_IMAGE_COLUMNS)} nor report columns "
                f"{list(REPORT_COLUMNS)} / findings / impression; its columns are {list(columns.values())}")
        self._label_cols = {name: columns[name.lower()] for name in CHEXPERT_14 if name.lower() in columns}
        self._images_root = Path(images_root) if images_root is not None else self._path.resolve().parent
        self._manifest_dir = Path(manifest_dir) if manifest_dir is not None else None
        self.notes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def _get(self, row: dict[str, Any], name: str) -> Any:
        column = self._columns.get(name)
        return None if column is None else row.get(column)

    def _text(self, row: dict[str, Any], name: str, where: str) -> str:
        value = self._get(row, name)
        if _is_blank(value):
            return ""
        if not isinstance(value, str):
            raise InputError(f"{where}: column {name!r} must be text, got {value!r}")
        return value.strip()

    def __iter__(self) -> Iterator[StudyRecord]:
        notes = {"studies": 0, "images": 0, "train": 0, "val": 0, "test": 0, "unassigned": 0}
        header_lines = 0 if self._path.suffix.lower() in (".jsonl", ".ndjson") else 1
        for n, row in enumerate(self._rows, start=1):
            where = f"{self._path}:{n + header_lines}"
            text = {key: "" for key in TEXT_COLUMNS}
            if self._report_col is not None and not _is_blank(row.get(self._report_col)):
                sections = extract_sections(str(row[self._report_col]))
                text.update({key: sections.get(key, "") for key in TEXT_COLUMNS})
            for key in TEXT_COLUMNS:
                own = self._text(row, key, where)
                if own:
                    text[key] = own
            paths = [p for col in self._image_cols for p in _paths(row.get(col))]
            views_raw = _paths(self._get(row, "view"))
            if views_raw and len(views_raw) not in (1, len(paths)):
                raise InputError(f"{where}: {len(views_raw)} views for {len(paths)} images; give one view or one per image")
            images = []
            for i, p in enumerate(paths):
                view = view_of(views_raw[0] if len(views_raw) == 1 else views_raw[i]) if views_raw else "unknown"
                # Absolute paths stay as the user wrote them; relative ones follow the manifest.
                path = p if os.path.isabs(p) else relative_to_manifest(os.path.join(self._images_root, p), self._manifest_dir)
                images.append(ImageRef(path=path, view=view))
            labels = {name: _label(row.get(col), where, name) for name, col in self._label_cols.items()}
            raw_id = self._get(row, "id")
            record_id = f"row{n}" if _is_blank(raw_id) else str(raw_id).strip()
            patient = self._get(row, "patient_id")
            split = normalise_split(self._get(row, "split"), where)
            notes["studies"] += 1
            notes["images"] += len(images)
            notes[split] += 1
            yield StudyRecord(id=record_id, patient_id=None if _is_blank(patient) else str(patient).strip(),
                              images=images, labels={name: labels.get(name) for name in CHEXPERT_14}, split=split, **text)
        self.notes = notes

