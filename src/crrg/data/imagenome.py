"""Chest ImaGenome scene graphs -> the 29 anatomical regions of each MIMIC-CXR frontal image.

The region-guided generator trains on per-region boxes, sentences and normal/abnormal flags; for
MIMIC-CXR those come from Chest ImaGenome (PhysioNet, same credentialing as MIMIC-CXR). Its layout
(version 1.0.0), as read here:

* silver: ``silver_dataset/scene_graph/<dicom_id>_SceneGraph.json``, one JSON per frontal image, or
  the archive ``silver_dataset/scene_graph.zip`` as shipped (read in place, members found by file
  name whatever their folder). A graph has ``objects`` (one per region: ``bbox_name``, the box in the
  224 x 224 resized-and-padded image ``x1..y2``, and in the original image ``original_x1..original_y2``)
  and ``attributes`` (per region: ``bbox_name``, ``phrases``: the report sentences about it, and
  ``attributes``: one list of ``category|yes/no|name`` strings per phrase, ``nlp|yes|abnormal``
  marking an abnormal description).
* gold (1,000 images, hand-checked; used instead of silver for those images):
  ``gold_dataset/gold_bbox_coordinate_annotations_1000images.csv`` (``image_id`` = ``<dicom>.dcm``,
  ``bbox_name``, ``original_x1..original_y2``) and ``gold_dataset/gold_object_attribute_with_coordinates.txt``
  (tab-separated: ``image_id``, ``bbox``, ``sentence``, ``categoryID``, ``label_name`` and ``relation``
  1/0 or ``context`` yes/no).

Boxes are the ``original_*`` coordinates: MIMIC-CXR-JPG keeps each DICOM's pixel grid, so they are
pixels of the JPG (the ``x1..y2`` ones are of a 224-pixel copy and are never used). Negative corners
are clipped to 0; with ``clip_to_images`` the far corners are clipped to the JPG's size (read from
its header). Chest ImaGenome names 36 objects; crrg uses RGRG's 29 (:data:`ANATOMICAL_REGIONS`).

Whatever cannot be mapped is counted by reason in ``notes`` (``imagenome unmapped: <reason>``), never
silently dropped. Graphs are read one at a time while the MIMIC-CXR reader streams studies, so memory
stays at one graph (plus the archive's member index and the small gold tables).
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from crrg.errors import InputError
from crrg.observations import ANATOMICAL_REGIONS, LATERAL_VIEWS
from crrg.records import Region, StudyRecord

log = logging.getLogger(__name__)

SILVER_DIR = Path("silver_dataset") / "scene_graph"
SILVER_ZIP = Path("silver_dataset") / "scene_graph.zip"
GOLD_BOXES = Path("gold_dataset") / "gold_bbox_coordinate_annotations_1000images.csv"
GOLD_ATTRIBUTES = Path("gold_dataset") / "gold_object_attribute_with_coordinates.txt"
GRAPH_SUFFIX = "_SceneGraph.json"
ORIGINAL_KEYS = ("original_x1", "original_y1", "original_x2", "original_y2")
ABNORMAL = "nlp|yes|abnormal"
_REGIONS = frozenset(ANATOMICAL_REGIONS)

# Reasons something was not mapped, as counted in notes.
NO_GRAPH = "frontal image without scene graph"
BAD_GRAPH = "unreadable scene graph"
OTHER_OBJECT = "object outside the 29 regions"
NO_ORIGINAL = "box without original coordinates"
EMPTY_BOX = "empty or out-of-image box"
NO_BOX = "described region without a box"


def _squash(text: str) -> str:
    return " ".join(str(text).split())


def _dicom(image_id: str) -> str:
    name = os.path.basename(str(image_id))
    for suffix in (GRAPH_SUFFIX, ".dcm", ".jpg"):
        name = name.removesuffix(suffix)
    return name


def _box(values: list[Any], size: tuple[int, int] | None) -> list[float] | None:
    """[x1, y1, x2, y2] clipped to the image (to 0 only when its size is unknown); None when empty."""
    x1, y1, x2, y2 = (max(0.0, float(v)) for v in values)
    if size is not None:
        w, h = size
        x1, x2, y1, y2 = min(x1, w), min(x2, w), min(y1, h), min(y2, h)
    if not (x2 > x1 and y2 > y1):
        return None
    return [x1, y1, x2, y2]


def _add_sentences(target: list[str], phrases: Any) -> None:
    for phrase in phrases if isinstance(phrases, list) else [phrases]:
        text = _squash(phrase) if phrase is not None else ""
        if text and text not in target:
            target.append(text)


def find_root(path: str | os.PathLike) -> Path:
    """The Chest ImaGenome folder under ``path`` (the folder itself, ``1.0.0/`` or
    ``chest-imagenome-dataset-1.0.0/`` below it), recognised by its silver or gold data."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Chest ImaGenome folder {path} does not exist")
    for candidate in (path, path / "1.0.0", path / "chest-imagenome-dataset-1.0.0"):
        if any((candidate / p).exists() for p in (SILVER_DIR, SILVER_ZIP, GOLD_BOXES)):
            return candidate
    raise InputError(f"{path} has neither {SILVER_DIR}/, {SILVER_ZIP} nor {GOLD_BOXES}; "
                     "point --imagenome at the Chest ImaGenome folder (chest-imagenome-dataset-1.0.0)")


class _SilverGraphs:
    """Silver scene graphs by dicom id, from the folder or the zip archive."""

    def __init__(self, root: Path) -> None:
        self._folder: Path | None = None
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, str] = {}
        if (root / SILVER_DIR).is_dir():
            self._folder = root / SILVER_DIR
        elif (root / SILVER_ZIP).is_file():
            try:
                self._zip = zipfile.ZipFile(root / SILVER_ZIP)
            except (zipfile.BadZipFile, OSError) as exc:
                raise InputError(f"{root / SILVER_ZIP} is not a readable zip ({exc})") from None
            for name in self._zip.namelist():
                if name.endswith(GRAPH_SUFFIX):
                    self._members[_dicom(name)] = name

    @property
    def available(self) -> bool:
        return self._folder is not None or self._zip is not None

    def read(self, dicom: str) -> bytes | None:
        if self._folder is not None:
            try:
                with open(self._folder / f"{dicom}{GRAPH_SUFFIX}", "rb") as handle:
                    return handle.read()
            except FileNotFoundError:
                return None
        if self._zip is not None and dicom in self._members:
            return self._zip.read(self._members[dicom])
        return None


def _read_gold(root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """dicom -> region -> {"box": [...], "sentences": [...], "abnormal": bool} from the gold tables."""
    import pandas as pd

    gold: dict[str, dict[str, dict[str, Any]]] = {}
    if not (root / GOLD_BOXES).is_file():
        return gold
    try:
        boxes = pd.read_csv(root / GOLD_BOXES, dtype={"image_id": str, "bbox_name": str})
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {root / GOLD_BOXES}: {exc}") from None
    missing = [c for c in ("image_id", "bbox_name", *ORIGINAL_KEYS) if c not in boxes.columns]
    if missing:
        raise InputError(f"{root / GOLD_BOXES} lacks column(s) {missing}")
    for row in boxes.itertuples(index=False):
        entry = gold.setdefault(_dicom(row.image_id), {}).setdefault(str(row.bbox_name).strip(), {
            "sentences": [], "abnormal": False})
        entry["box"] = [getattr(row, k) for k in ORIGINAL_KEYS]
    if (root / GOLD_ATTRIBUTES).is_file():
        try:
            attributes = pd.read_csv(root / GOLD_ATTRIBUTES, sep="\t", dtype=str, keep_default_na=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {root / GOLD_ATTRIBUTES}: {exc}") from None
        for row in attributes.to_dict("records"):
            regions = gold.get(_dicom(row.get("image_id", "")))
            if regions is None:
                continue
            entry = regions.setdefault(str(row.get("bbox", "")).strip(), {"sentences": [], "abnormal": False})
            _add_sentences(entry["sentences"], row.get("sentence"))
            affirmed = str(row.get("relation", "")).strip() in ("1", "1.0") or str(row.get("context", "")).strip() == "yes"
            if row.get("categoryID") == "nlp" and row.get("label_name") == "abnormal" and affirmed:
                entry["abnormal"] = True
    return gold


def parse_scene_graph(graph: dict[str, Any], counts: Counter, size: tuple[int, int] | None = None,
                      image: int = 0) -> list[Region]:
    """The 29-region view of one silver scene graph, in :data:`ANATOMICAL_REGIONS` order."""
    boxes: dict[str, list[float]] = {}
    for obj in graph.get("objects") or []:
        name = obj.get("bbox_name") if isinstance(obj, dict) else None
        if name not in _REGIONS:
            counts[OTHER_OBJECT] += 1
            continue
        try:
            box = _box([obj[k] for k in ORIGINAL_KEYS], size)
        except (KeyError, TypeError, ValueError):
            counts[NO_ORIGINAL] += 1
            continue
        if box is None:
            counts[EMPTY_BOX] += 1
            continue
        boxes[name] = box
    sentences: dict[str, list[str]] = {}
    abnormal: dict[str, bool] = {}
    for attribute in graph.get("attributes") or []:
        name = attribute.get("bbox_name") if isinstance(attribute, dict) else None
        if name not in _REGIONS:
            continue  # "left breast", "right chest wall": descriptions of objects crrg has no region for
        _add_sentences(sentences.setdefault(name, []), attribute.get("phrases") or [])
        flags = attribute.get("attributes") or []
        abnormal[name] = abnormal.get(name, False) or any(
            ABNORMAL in (group if isinstance(group, list) else [group]) for group in flags)
    return _regions(boxes, sentences, abnormal, counts, image)


def _regions(boxes: dict[str, list[float]], sentences: dict[str, list[str]], abnormal: dict[str, bool],
             counts: Counter, image: int) -> list[Region]:
    for name in sentences:
        if name not in boxes and sentences[name]:
            counts[NO_BOX] += 1
    return [Region(name=name, image=image, box=boxes[name], abnormal=abnormal.get(name, False),
                   sentences=sentences.get(name, [])) for name in ANATOMICAL_REGIONS if name in boxes]


class ImaGenome:
    """Region lookup by dicom id over a Chest ImaGenome folder; ``counts`` collects what was not mapped."""

    def __init__(self, path: str | os.PathLike, use_gold: bool = True) -> None:
        self.root = find_root(path)
        self._silver = _SilverGraphs(self.root)
        self._gold = _read_gold(self.root) if use_gold else {}
        if not self._silver.available and not self._gold:
            raise InputError(f"{self.root} has no silver scene graphs ({SILVER_DIR}/ or {SILVER_ZIP}) and no gold boxes")
        self.counts: Counter = Counter()

    def regions(self, dicom: str, image: int = 0, size: tuple[int, int] | None = None) -> list[Region] | None:
        """The image's regions (gold where annotated, else silver), or None when it has no scene graph."""
        gold = self._gold.get(dicom)
        if gold is not None:
            self.counts["gold images"] += 1
            boxes: dict[str, list[float]] = {}
            for name, entry in gold.items():
                if name not in _REGIONS:
                    self.counts[OTHER_OBJECT] += 1
                    continue
                box = None
                if "box" in entry:
                    try:
                        box = _box(entry["box"], size)
                    except (TypeError, ValueError):
                        self.counts[NO_ORIGINAL] += 1
                        continue
                    if box is None:
                        self.counts[EMPTY_BOX] += 1
                if box is not None:
                    boxes[name] = box
            return _regions(boxes, {n: e["sentences"] for n, e in gold.items() if n in _REGIONS},
                            {n: e["abnormal"] for n, e in gold.items()}, self.counts, image)
        raw = self._silver.read(dicom)
        if raw is None:
            self.counts[NO_GRAPH] += 1
            return None
        try:
            graph = json.loads(raw)
        except ValueError:
            self.counts[BAD_GRAPH] += 1
            return None
        if not isinstance(graph, dict):
            self.counts[BAD_GRAPH] += 1
            return None
        self.counts["silver images"] += 1
        return parse_scene_graph(graph, self.counts, size, image)


def _image_size(path: str) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError):
        return None


class WithImaGenomeRegions:
    """A MIMIC-CXR reader whose records carry Chest ImaGenome regions (``StudyRecord.regions``).

    Regions come from every non-lateral image that has a scene graph (index = the image's place in
    the record); a study none of whose images has one keeps ``regions = None``. ``notes`` holds the
    reader's counts plus ``imagenome ...`` counts, the unmapped ones by reason.
    """

    def __init__(self, reader, imagenome: str | os.PathLike, use_gold: bool = True, clip_to_images: bool = False,
                 manifest_dir: str | os.PathLike | None = None) -> None:
        self._reader = reader
        self._imagenome = ImaGenome(imagenome, use_gold=use_gold)
        self._clip = clip_to_images
        self._base = Path(manifest_dir) if manifest_dir is not None else Path.cwd()
        self.notes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._reader)

    def __iter__(self) -> Iterator[StudyRecord]:
        source = self._imagenome
        studies = 0
        regions_total = 0
        for record in self._reader:
            found: list[Region] = []
            any_graph = False
            for index, image in enumerate(record.images):
                if image.view in LATERAL_VIEWS:
                    continue
                size = _image_size(str(self._base / image.path)) if self._clip else None
                regions = source.regions(_dicom(image.path), index, size)
                if regions is not None:
                    any_graph = True
                    found.extend(regions)
            if any_graph:
                record.regions = found
                studies += 1
                regions_total += len(found)
            yield record
        notes = dict(getattr(self._reader, "notes", {}) or {})
        notes["imagenome studies with regions"] = studies
        notes["imagenome regions"] = regions_total
        for key in ("silver images", "gold images"):
            notes[f"imagenome {key}"] = source.counts.get(key, 0)
        unmapped = {k: v for k, v in source.counts.items() if k not in ("silver images", "gold images")}
        for reason, count in sorted(unmapped.items()):
            notes[f"imagenome unmapped: {reason}"] = count
        if unmapped:
            log.info("Chest ImaGenome: not mapped: %s", ", ".join(f"{v} {k}" for k, v in sorted(unmapped.items())))
        self.notes = notes
