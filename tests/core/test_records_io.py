from __future__ import annotations

import json
import os
import stat

import pytest

from crrg.errors import ManifestError
from crrg.io import atomic_open, atomic_write_json
from crrg.records import ImageRef, Region, StudyRecord, read_manifest, write_manifest


def record(**kw) -> StudyRecord:
    base = dict(id="s1", patient_id="p1", images=[ImageRef("img/a.png", "PA")], findings="Clear lungs.",
                impression="Normal.", split="train")
    base.update(kw)
    return StudyRecord(**base)


def test_round_trip_resolves_relative_paths(tmp_path):
    rec = record(regions=[Region("left lung", 0, [1, 2, 30, 40], True, ["Opacity."])], meta={"mesh_major": ["normal"]})
    rec.labels["Cardiomegaly"] = 1
    path = tmp_path / "m.jsonl"
    assert write_manifest(path, [rec]) == 1
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {"crrg_manifest": 1}
    (back,) = read_manifest(path)
    assert back.images[0].path == str(tmp_path / "img" / "a.png")
    assert back.regions[0].box == [1.0, 2.0, 30.0, 40.0] and back.regions[0].sentences == ["Opacity."]
    assert back.labels["Cardiomegaly"] == 1 and back.labels["Edema"] is None
    assert back.report == "Clear lungs. Normal."
    raw = read_manifest(path, resolve_paths=False)[0]
    assert raw.to_dict() == rec.to_dict()


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ('{"id": ""}', "'id' must be a non-empty string"),
    ('{"id": "a", "labels": {"Cardiomegaly": 2}}', "expected 1, 0, -1 or null"),
    ('{"id": "a", "labels": {"Heart": 1}}', "unknown label"),
    ('{"id": "a", "split": "dev"}', "split 'dev'"),
    ('{"id": "a", "images": [{"path": "x.png", "view": "OBLIQUE"}]}', "view 'OBLIQUE'"),
    ('{"id": "a", "images": ["x.png"], "regions": [{"name": "left lung", "box": [5, 5, 1, 1]}]}', "x2 < x1"),
    ('{"id": "a", "regions": [{"name": "elbow", "box": [0, 0, 1, 1]}]}', "not a Chest ImaGenome region"),
    ('{"id": "a", "surprise": 1}', "unknown field"),
])
def test_bad_lines_are_named(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"crrg_manifest": 1}\n{"id": "ok"}\n' + line + "\n")
    with pytest.raises(ManifestError, match=rf"bad.jsonl:3: .*{message}"):
        read_manifest(path)


def test_schema_version_and_duplicates(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"crrg_manifest": 99}\n')
    with pytest.raises(ManifestError, match="schema version 99"):
        read_manifest(path)
    with pytest.raises(ManifestError, match="duplicate study id"):
        write_manifest(tmp_path / "d.jsonl", [record(), record()])
    assert not (tmp_path / "d.jsonl").exists()
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "missing.jsonl")


def test_atomic_write_keeps_old_file_on_failure_and_normal_mode(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("partial")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
