"""``crrg synth preview``: a contact sheet to look at what was generated (images, boxes, labels, impression)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from crrg.errors import InputError
from crrg.io import atomic_save_file
from crrg.records import StudyRecord, read_manifest

POSITIVE_COLOUR = (255, 80, 60)
NORMAL_COLOUR = (70, 170, 255)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _load_gray(path: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, FileNotFoundError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    if arr.dtype == np.uint16 or arr.max() > 255:
        arr = (arr.astype(np.float32) / 65535.0 * 255.0)
    if arr.ndim == 3:
        arr = arr[..., :3].mean(-1)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGB")


def _records(folder: Path, manifest: Path, count: int, keep=lambda r: True) -> list[StudyRecord]:
    """From the manifest, or, while a set is still being generated, from the finished studies' sidecars."""
    if manifest.is_file():
        return [r for r in read_manifest(manifest) if keep(r)][:count]
    sidecars = sorted((folder / "studies").glob("*.json")) if folder.is_dir() else []
    if not sidecars:
        raise InputError(f"{folder} has no manifest.jsonl and no finished studies; run `crrg synth generate --out {folder}` first")
    records = []
    for path in sidecars:
        rec = StudyRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
        for im in rec.images:
            im.path = str(folder / im.path)
        if keep(rec):
            records.append(rec)
        if len(records) == count:
            break
    return records


def contact_sheet(folder: str | Path, out: str | Path, count: int = 12, regions: str = "abnormal", cell: int = 320,
                  columns: int = 2, finding: str | None = None) -> Path:
    """Draw ``count`` studies (frontal with boxes, lateral, labels, impression) in a grid; returns the sheet path."""
    folder = Path(folder)
    manifest = folder if folder.is_file() else folder / "manifest.jsonl"
    if regions not in ("abnormal", "all", "none"):
        raise InputError(f"--regions must be abnormal, all or none (got {regions!r})")
    if count < 1:
        raise InputError("--count must be at least 1")
    def keep(record: StudyRecord) -> bool:
        """``finding``: a CheXpert label that must be positive, or an inserted finding kind (e.g. emphysema)."""
        if not finding:
            return True
        if finding in record.labels:
            return record.labels[finding] == 1
        return any(f.get("kind") == finding for f in record.meta.get("findings", []))

    records = _records(folder, manifest, count, keep)
    if not records:
        raise InputError(f"no study in {folder} has {finding!r}")
    text_h = int(cell * 0.32)
    tile_w, tile_h = 2 * cell, cell + text_h
    rows = (len(records) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tile_w, rows * tile_h), (20, 20, 20))
    small, tiny = _font(max(cell // 22, 9)), _font(max(cell // 30, 8))
    for k, rec in enumerate(records):
        x0, y0 = (k % columns) * tile_w, (k // columns) * tile_h
        for j, im in enumerate(rec.images[:2]):
            pic = _load_gray(im.path)
            w, h = pic.size
            draw = ImageDraw.Draw(pic)
            if j == 0 and rec.regions and regions != "none":
                for r in rec.regions:
                    if r.image != 0 or (regions == "abnormal" and not r.abnormal):
                        continue
                    colour = POSITIVE_COLOUR if r.abnormal else NORMAL_COLOUR
                    draw.rectangle(r.box, outline=colour, width=max(w // 256, 1))
                    draw.text((r.box[0] + 2, r.box[1] + 1), r.name, fill=colour, font=_font(max(w // 28, 8)))
            pic = pic.resize((cell, cell), Image.BILINEAR)
            sheet.paste(pic, (x0 + j * cell, y0))
        d = ImageDraw.Draw(sheet)
        positives = [n for n, v in rec.labels.items() if v == 1]
        uncertain = [n for n, v in rec.labels.items() if v == -1]
        head = f"{rec.id}  [{rec.images[0].view if rec.images else ''}]  " + ", ".join(positives) + (f"  (?: {', '.join(uncertain)})" if uncertain else "")
        d.text((x0 + 6, y0 + cell + 4), head, fill=(255, 220, 120), font=small)
        body = textwrap.wrap(f"IND: {rec.indication}  IMP: {rec.impression}", width=int(tile_w / (cell / 40 * 0.9) * 0.55) or 60)
        for i, line in enumerate(body[:4]):
            d.text((x0 + 6, y0 + cell + 6 + (i + 1) * (cell // 17)), line, fill=(230, 230, 230), font=tiny)
    out = Path(out)
    atomic_save_file(out, lambda tmp: sheet.save(tmp, format="PNG"))
    return out
