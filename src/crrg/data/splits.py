"""Deterministic patient-level splits for records the dataset leaves ``unassigned``.

A user's own table or the IU X-Ray studies outside the R2Gen split often have no split. Splitting by
a seeded hash of the patient id (the study id when there is none) keeps every study of a patient in
one split (no patient leaks from train into test), gives the same answer on every machine and for
every order of the input, and works on a stream: nothing is held in memory. The ratios are met in
expectation, not exactly; :func:`crrg.data.stats.compute_stats` shows the counts obtained.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Iterator

from crrg.errors import InputError
from crrg.records import StudyRecord


def parse_ratios(text: str) -> tuple[float, float, float]:
    """"0.8,0.1,0.1" -> train / val / test fractions summing to 1."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise InputError(f"split ratios {text!r} must be three numbers like 0.8,0.1,0.1") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise InputError(f"split ratios {text!r} must be three non-negative numbers (train,val,test) summing to 1")
    return parts  # type: ignore[return-value]


def split_for(key: str, ratios: tuple[float, float, float], seed: int = 0) -> str:
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2 ** 64
    if u < ratios[0]:
        return "train"
    if u < ratios[0] + ratios[1]:
        return "val"
    return "test"


def assign_splits(records: Iterable[StudyRecord], ratios: tuple[float, float, float], seed: int = 0) -> Iterator[StudyRecord]:
    """Give unassigned records a split by patient; records that have a split keep it."""
    for record in records:
        if record.split == "unassigned":
            record.split = split_for(record.patient_id or record.id, ratios, seed)
        yield record
