"""End to end: a tiny set is deterministic, resumable, complete and in the project's record format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crrg.observations import ANATOMICAL_REGIONS, CHEXPERT_14
from crrg.records import read_manifest
from crrg.text import split_sentences

SPACING = 2.5  # as in conftest.py: a coarse phantom keeps these tests fast

N = 4


_CACHE: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _shared_cache(synth_cache, phantom):
    _CACHE["dir"] = str(synth_cache)


def _cfg(out: Path, **kw):
    from crrg.synth.generate import SynthConfig

    base = dict(out=str(out), n=N, seed=3, size=64, n_poses=1, spacing=SPACING, workers=1, cache_dir=_CACHE["dir"])
    base.update(kw)
    return SynthConfig(**base)


@pytest.fixture(scope="module")
def made(tmp_path_factory, phantom):
    from crrg.synth.generate import generate

    out = tmp_path_factory.mktemp("synth_a")
    generate(_cfg(out))
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_manifest_has_complete_records(made):
    records = read_manifest(made / "manifest.jsonl")
    assert len(records) == N and (made / "DONE").is_file()
    for r in records:
        assert [im.view for im in r.images][1] == "LATERAL" and r.images[0].view in ("PA", "AP")
        assert all(Path(im.path).is_file() for im in r.images)
        assert r.findings and r.impression and r.indication
        assert set(r.labels) == set(CHEXPERT_14)
        assert [g.name for g in r.regions] == list(ANATOMICAL_REGIONS)
        assert all(g.image == 0 for g in r.regions)
        assert r.split in ("train", "val", "test")
        positives = {k for k, v in r.labels.items() if v == 1}
        abnormal = [g for g in r.regions if g.abnormal]
        if positives - {"No Finding"}:
            assert abnormal and all(g.sentences for g in abnormal)
            for g in abnormal:  # region sentences are sentences of the report
                assert all(s in r.findings for s in g.sentences)
        else:  # every sentence of a normal report belongs to a region, so a region-guided writer can learn it
            attached = {s for g in r.regions for s in g.sentences}
            assert set(split_sentences(r.findings)) <= attached


def test_same_seed_gives_identical_bytes(made, tmp_path):
    from crrg.synth.generate import generate

    other = tmp_path / "b"
    generate(_cfg(other))
    assert _files(made) == _files(other)


def test_resume_rebuilds_only_missing_studies(made, tmp_path):
    import shutil

    from crrg.synth.generate import generate, study_id

    copy = tmp_path / "c"
    shutil.copytree(made, copy)
    before = _files(copy)
    victim = study_id(3, 2)
    (copy / "studies" / f"{victim}.json").unlink()
    (copy / "images" / f"{victim}_frontal.png").unlink()
    (copy / "manifest.jsonl").unlink()
    keep = copy / "studies" / f"{study_id(3, 0)}.json"
    mtime = keep.stat().st_mtime_ns
    generate(_cfg(copy))
    assert keep.stat().st_mtime_ns == mtime  # finished studies are not redone
    assert _files(copy) == before


def test_resume_with_other_settings_is_refused(made):
    from crrg.errors import InputError
    from crrg.synth.generate import generate

    with pytest.raises(InputError, match="different settings"):
        generate(_cfg(made, size=96))


def test_bad_options_are_user_errors(tmp_path):
    from crrg.errors import InputError

    for kw in ({"size": 2000}, {"views": ("frontal", "oblique")}, {"bits": 12}, {"n": 0}):
        with pytest.raises(InputError):
            _cfg(tmp_path, **kw).validate()


def test_eight_bit_and_dicom_output(tmp_path, phantom):
    pydicom = pytest.importorskip("pydicom")
    from PIL import Image

    from crrg.synth.generate import generate

    out = tmp_path / "d"
    generate(_cfg(out, n=1, bits=8, dicom=True, views=("frontal",)))
    rec = read_manifest(out / "manifest.jsonl")[0]
    assert len(rec.images) == 1
    with Image.open(rec.images[0].path) as im:
        assert im.mode == "L" and im.size == (64, 64)
    ds = pydicom.dcmread(rec.images[0].path.replace(".png", ".dcm"))
    assert ds.Modality == "DX" and ds.ViewPosition == rec.images[0].view
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.Rows == 64
    assert ds.pixel_array.dtype.itemsize == 2


def test_preview_draws_a_sheet(made, tmp_path):
    from PIL import Image

    from crrg.synth.preview import contact_sheet

    sheet = contact_sheet(made, tmp_path / "sheet.png", count=3, cell=96)
    with Image.open(sheet) as im:
        assert im.size == (2 * 2 * 96, 2 * (96 + int(96 * 0.32)))


def test_cli_generate_reports_bad_input_in_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "crrg", "synth", "generate", "--out", str(tmp_path / "x"), "--size", "5000"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--size" in proc.stderr and "Traceback" not in proc.stderr


def test_two_workers_give_the_same_bytes_as_one(made, tmp_path):
    from crrg.synth.generate import generate

    other = tmp_path / "w2"
    generate(_cfg(other, workers=2))
    assert _files(made) == _files(other)


def test_preview_filters_by_finding(made, tmp_path):
    from crrg.errors import InputError
    from crrg.synth.preview import _records, contact_sheet

    keep_all = _records(made, made / "manifest.jsonl", 10)
    assert len(keep_all) == N
    with pytest.raises(InputError, match="no study"):
        contact_sheet(made, tmp_path / "s.png", finding="no-such-finding")
    with pytest.raises(InputError, match="no manifest"):
        contact_sheet(tmp_path / "empty", tmp_path / "s.png")
