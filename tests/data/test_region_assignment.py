"""Region supervision without boxes: sentence -> regions lexicon, scoring, and pseudo boxes via the CLI."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from crrg.cli.main import app
from crrg.errors import CrrgError
from crrg.data.region_assignment import (AssignmentScore, assign_regions, assign_report, frontal_image, reference_pairs,
                                         score_assignment)
from crrg.observations import ANATOMICAL_REGIONS
from crrg.records import ImageRef, Region, StudyRecord, read_manifest

from .real_layouts import make_iu_xray

runner = CliRunner()


@pytest.mark.parametrize("sentence, regions", [
    ("There is a small left pleural effusion.", {"left costophrenic angle", "left lung"}),
    ("Right lower lobe consolidation.", {"right lower lung zone", "right lung"}),
    ("Left upper lobe opacity, right base clear.", {"left upper lung zone", "left lung", "right lower lung zone", "right lung"}),
    ("The lungs are clear.", {"right lung", "left lung"}),
    ("Bibasilar atelectasis.", {"right lower lung zone", "left lower lung zone", "right lung", "left lung"}),
    ("Small right apical pneumothorax.", {"right apical zone", "right lung"}),
    ("The cardiomediastinal silhouette is normal.", {"cardiac silhouette", "mediastinum"}),
    ("Widening of the upper mediastinum.", {"upper mediastinum", "mediastinum"}),
    ("Endotracheal tube tip 4 cm above the carina.", {"trachea", "carina"}),
    ("Right IJ line terminates at the cavoatrial junction.", {"cavoatrial junction"}),
    ("Old fracture of the left clavicle.", {"left clavicle"}),
    ("Elevated right hemidiaphragm.", {"right hemidiaphragm"}),
    ("Calcified aortic knob.", {"aortic arch"}),
    ("Please see the prior note.", set()),
])
def test_assign_regions(sentence, regions):
    assigned = assign_regions(sentence)
    assert set(assigned) == regions
    assert list(assigned) == sorted(assigned, key=ANATOMICAL_REGIONS.index)


def test_assign_report_and_score():
    by_region = assign_report(["The heart is enlarged.", "No pneumothorax."])
    assert by_region["cardiac silhouette"] == ["The heart is enlarged."]
    assert by_region["right apical zone"] == ["No pneumothorax."]
    record = StudyRecord(id="a", images=[ImageRef("x.png", "PA")], regions=[
        Region("cardiac silhouette", 0, [0, 0, 1, 1], True, ["The heart is enlarged."]),
        Region("right lung", 0, [0, 0, 1, 1], False, ["The heart is enlarged."]),  # a wrong reference pair
    ])
    pairs = list(reference_pairs([record]))
    assert pairs == [("The heart is enlarged.", frozenset({"cardiac silhouette", "right lung"}))]
    score = score_assignment(pairs)
    assert (score.pairs_true, score.pairs_predicted, score.pairs_correct) == (2, 1, 1)
    assert score.precision == 1.0 and score.recall == 0.5 and abs(score.f1 - 2 / 3) < 1e-9
    assert AssignmentScore(0, 0, 0, 0).f1 == 0.0


def test_frontal_image_prefers_pa_ap_then_non_lateral():
    assert frontal_image(StudyRecord(id="a", images=[ImageRef("l", "LATERAL"), ImageRef("f", "AP")])) == 1
    assert frontal_image(StudyRecord(id="b", images=[ImageRef("l", "LL"), ImageRef("u", "unknown")])) == 1
    assert frontal_image(StudyRecord(id="c", images=[ImageRef("l", "LATERAL")])) is None


@pytest.mark.slow
def test_enrich_regions_gives_an_iu_xray_manifest_boxes_and_sentences(tmp_path: Path):
    iu = make_iu_xray(tmp_path / "iu", n=6)
    manifest = tmp_path / "out" / "iu.jsonl"
    result = runner.invoke(app, ["--quiet", "data", "prepare", "iu-xray", "--reports", str(iu / "NLMCXR_reports.tgz"),
                                 "--split", str(iu / "annotation.json"), "--images", str(iu / "images"),
                                 "--metadata", str(iu / "nlmcxr_dicom_metadata.csv.gz"), "--out", str(manifest)])
    assert result.exit_code == 0, result.output
    enriched = tmp_path / "other" / "iu_regions.jsonl"
    result = runner.invoke(app, ["data", "enrich-regions", str(manifest), "--out", str(enriched)])
    assert result.exit_code == 0, result.output
    assert "enriched: 6" in result.output
    records = read_manifest(enriched)
    for record in records:
        assert [r.name for r in record.regions] == list(ANATOMICAL_REGIONS)
        assert all(r.image == 0 and r.box[2] > r.box[0] and r.box[3] > r.box[1] for r in record.regions)
        assert Path(record.images[0].path).is_file()  # paths re-written relative to the new manifest
        described = {s for r in record.regions for s in r.sentences}
        assert described and described <= set(record.findings.split(". ")) | {s + "." for s in record.findings.rstrip(".").split(". ")} | {record.impression}
    # Regions a study already has are kept unless --overwrite.
    again = tmp_path / "other" / "again.jsonl"
    result = runner.invoke(app, ["data", "enrich-regions", str(enriched), "--out", str(again), "--device", "cpu"])
    assert result.exit_code == 0 and "kept: 6" in result.output


def test_enrich_regions_refuses_a_device_that_is_not_here(tmp_path: Path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    result = runner.invoke(app, ["data", "enrich-regions", str(manifest), "--out", str(tmp_path / "o.jsonl"),
                                 "--device", "cuda"])
    # a CrrgError: `crrg` prints its one line and exits 2 (crrg.cli.main), before any model loads
    assert isinstance(result.exception, CrrgError) and "no GPU" in str(result.exception)
    result = runner.invoke(app, ["data", "enrich-regions", str(manifest), "--out", str(tmp_path / "o.jsonl"),
                                 "--device", "tpu"])
    assert isinstance(result.exception, CrrgError) and "not one of" in str(result.exception)
