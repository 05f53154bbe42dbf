"""Record filters that work the same way for every dataset (views, report text, images).

They take and return iterables so they compose with the streaming readers: a filtered MIMIC
manifest is never held in memory.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

from crrg.errors import InputError
from crrg.observations import VIEWS
from crrg.records import StudyRecord


def parse_views(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """"PA,AP" -> ("PA", "AP"); also 'frontal' (PA, AP) and 'lateral' (LATERAL, LL). None keeps all."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    views: list[str] = []
    for item in (i.strip() for i in items if i.strip()):
        key = item.lower()
        if key == "frontal":
            views += ["PA", "AP"]
        elif key == "lateral":
            views += ["LATERAL", "LL"]
        else:
            match = next((v for v in VIEWS if v.lower() == key), None)
            if match is None:
                raise InputError(f"view {item!r} is not one of {list(VIEWS)} (or 'frontal', 'lateral')")
            views.append(match)
    if not views:
        raise InputError("no views given; e.g. --views PA,AP or --views frontal")
    return tuple(dict.fromkeys(views))


def keep_views(records: Iterable[StudyRecord], views: Sequence[str]) -> Iterator[StudyRecord]:
    """Keep only images of the given views; studies left without images are dropped. Regions follow
    their image (``Region.image`` is re-indexed; regions of a dropped image go with it)."""
    wanted = set(views)
    for record in records:
        kept = [i for i, im in enumerate(record.images) if im.view in wanted]
        if record.regions is not None and len(kept) != len(record.images):
            index = {old: new for new, old in enumerate(kept)}
            record.regions = [r for r in record.regions if r.image in index] or None
            for region in record.regions or []:
                region.image = index[region.image]
        record.images = [record.images[i] for i in kept]
        if record.images:
            yield record


def require_report(records: Iterable[StudyRecord]) -> Iterator[StudyRecord]:
    """Drop studies with neither findings nor impression (nothing to train a generator on)."""
    return (r for r in records if r.findings.strip() or r.impression.strip())


def require_images(records: Iterable[StudyRecord]) -> Iterator[StudyRecord]:
    return (r for r in records if r.images)


def apply_filters(records: Iterable[StudyRecord], views: Sequence[str] | None = None, with_report: bool = False,
                  with_images: bool = False) -> Iterable[StudyRecord]:
    if views is not None:
        records = keep_views(records, views)
    if with_report:
        records = require_report(records)
    if with_images:
        records = require_images(records)
    return records
