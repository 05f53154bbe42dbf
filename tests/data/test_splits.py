import pytest

from crrg.data.splits import assign_splits, parse_ratios, split_for
from crrg.errors import InputError
from crrg.records import StudyRecord


def test_patient_level_deterministic_split():
    records = [StudyRecord(id=f"s{i}", patient_id=f"p{i // 3}") for i in range(3000)]
    records[0].split = "test"
    out = list(assign_splits(records, (0.8, 0.1, 0.1), seed=1))
    assert out[0].split == "test"  # an existing split is kept
    by_patient: dict[str, set[str]] = {}
    for r in out[1:]:
        by_patient.setdefault(r.patient_id, set()).add(r.split)
    assert all(len(s) == 1 for s in by_patient.values())  # no patient in two splits
    counts = {s: sum(r.split == s for r in out) for s in ("train", "val", "test")}
    assert 2200 < counts["train"] < 2600 and 200 < counts["val"] < 400 and 200 < counts["test"] < 400
    assert split_for("p7", (0.8, 0.1, 0.1), 1) == split_for("p7", (0.8, 0.1, 0.1), 1)
    assert [split_for(f"p{i}", (0.8, 0.1, 0.1), 1) for i in range(50)] != [split_for(f"p{i}", (0.8, 0.1, 0.1), 2) for i in range(50)]
    no_patient = list(assign_splits([StudyRecord(id="x")], (0.0, 0.0, 1.0)))
    assert no_patient[0].split == "test"


def test_bad_ratios():
    assert parse_ratios("0.7,0.2,0.1") == (0.7, 0.2, 0.1)
    for bad in ("0.5,0.5", "a,b,c", "0.9,0.2,-0.1", "0.5,0.2,0.2"):
        with pytest.raises(InputError, match="split ratios"):
            parse_ratios(bad)
