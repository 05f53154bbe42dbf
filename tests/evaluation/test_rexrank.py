"""ReXrank JSON in and out, with fixtures in ReXrank's own layout (IU X-Ray and MIMIC-CXR entries)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from crrg.data.rexrank import (
    ground_truth_text,
    is_rexrank_json,
    read_rexrank,
    read_rexrank_ground_truth,
    read_rexrank_predictions,
    rexrank_records,
    write_rexrank_submission,
)
from crrg.errors import InputError

IU_ENTRY = {
    "key_image_path": "CXR38_IM-1911/0.png",
    "image_path": ["CXR38_IM-1911/0.png", "CXR38_IM-1911/1.png"],
    "report": "Findings: Lungs are clear. Impression: No acute cardiopulmonary process.",
    "section_findings": "Lungs are clear.",
    "section_impression": "No acute cardiopulmonary process.",
    "split": "test",
    "frontal_lateral": ["Frontal", "Lateral"],
    "context": "Indication: shortness of breath Comparison: XXXX",
}
# MIMIC-CXR entry: absolute-looking image paths, MIMIC view names, and a missing impression (NaN in the file)
MIMIC_TEXT = """{"50042142": {"image_path": ["/p10/p10268877/s50042142/4c3c1335.jpg", "/p10/p10268877/s50042142/9a.jpg"],
  "section_findings": "The ET tube is 3.5 cm above the carina.\\nThe heart size is moderately enlarged.",
  "section_impression": NaN, "frontal_lateral": ["antero-posterior", "left lateral"], "split": "test",
  "subject_id": 10268877, "context": "Age:50-60.Gender:M.Indication: Intubated, evaluate ET tube.",
  "key_image_path": "/p10/p10268877/s50042142/4c3c1335.jpg"}}"""


@pytest.fixture
def iu_json(tmp_path):
    path = tmp_path / "ReXRank_IUXray_test.json"
    second = dict(IU_ENTRY, section_findings="Heart is enlarged.", section_impression="Cardiomegaly.",
                  image_path=["CXR9_IM-1/0.png"], frontal_lateral=["Frontal"])
    path.write_text(json.dumps({"CXR38_IM-1911": IU_ENTRY, "CXR9_IM-1": second}, indent=4))
    return path


def test_ground_truth_is_rexranks_findings_impression_string(iu_json, tmp_path):
    gt = read_rexrank_ground_truth(iu_json)
    assert gt["CXR38_IM-1911"] == "Findings: Lungs are clear. Impression: No acute cardiopulmonary process."
    mimic = tmp_path / "mimic.json"
    mimic.write_text(MIMIC_TEXT)
    # ReXrank's script formats a missing section as None
    assert read_rexrank_ground_truth(mimic)["50042142"].endswith("heart size is moderately enlarged. Impression: None")
    assert ground_truth_text({"findings": "A.", "impression": "B."}) == "Findings: A. Impression: B."


def test_records_resolve_images_views_and_context(iu_json, tmp_path):
    records = rexrank_records(iu_json, image_root=tmp_path / "images")
    first = records[0]
    assert first.id == "CXR38_IM-1911"
    assert [im.path for im in first.images] == [str(tmp_path / "images" / "CXR38_IM-1911" / f"{i}.png") for i in (0, 1)]
    assert [im.view for im in first.images] == ["PA", "LATERAL"]
    assert first.indication.startswith("Indication: shortness of breath")
    assert first.report == "Lungs are clear. No acute cardiopulmonary process."
    mimic = tmp_path / "mimic.json"
    mimic.write_text(MIMIC_TEXT)
    rec = rexrank_records(mimic, image_root=tmp_path / "files")[0]
    assert rec.images[0].path == str(tmp_path / "files" / "p10" / "p10268877" / "s50042142" / "4c3c1335.jpg")
    assert [im.view for im in rec.images] == ["AP", "LL"] and rec.impression == ""


def test_submission_round_trip(iu_json, tmp_path):
    preds = {"CXR38_IM-1911": "Findings: Clear lungs. Impression: Normal.", "CXR9_IM-1": "Findings: Big heart."}
    out = tmp_path / "prediction.json"
    write_rexrank_submission(out, iu_json, preds)
    saved = json.loads(out.read_text())
    assert list(saved) == ["CXR38_IM-1911", "CXR9_IM-1"]  # ReXrank's order kept
    for key, entry in saved.items():
        assert entry["model_prediction"] == preds[key]
        assert {k: v for k, v in entry.items() if k != "model_prediction"} == read_rexrank(iu_json)[key]
    assert is_rexrank_json(out) and read_rexrank_predictions(out) == preds
    # the submission's ground truth is the input's
    assert read_rexrank_ground_truth(out) == read_rexrank_ground_truth(iu_json)
    with pytest.raises(InputError, match="no generated report"):
        write_rexrank_submission(tmp_path / "x.json", iu_json, {"CXR38_IM-1911": "x"})
    with pytest.raises(InputError, match="model_prediction"):
        read_rexrank_predictions(iu_json)


def test_layout_errors_are_input_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"s1": {"report": "x"}}))
    assert not is_rexrank_json(bad)
    with pytest.raises(InputError, match="image_path"):
        read_rexrank(bad)
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"id": "a", "report": "x"}\n')
    assert not is_rexrank_json(jsonl)


def test_evaluate_reads_rexrank_ground_truth_and_submission(iu_json, tmp_path):
    from crrg.cli.main import app

    sub = tmp_path / "prediction.json"
    write_rexrank_submission(sub, iu_json, {k: v for k, v in read_rexrank_ground_truth(iu_json).items()})
    out = tmp_path / "m.json"
    result = CliRunner().invoke(app, ["--quiet", "evaluate", "--pred", str(sub), "--ref", str(iu_json), "--no-meteor",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    m = json.loads(out.read_text())["metrics"]
    assert m["bleu_4"] == pytest.approx(1.0, abs=1e-6) and m["n"] == 2


def test_report_rexrank_runs_batch_mode_and_writes_the_submission(iu_json, tmp_path):
    from crrg.data.rexrank import report_rexrank
    from crrg.records import read_manifest

    seen = {}

    def fake_batch(items, out):  # stands in for crrg report's batch mode
        records = read_manifest(items[0])
        seen.update({r.id: ([im.path for im in r.images], [im.view for im in r.images], r.indication) for r in records})
        out.write_text("".join(json.dumps({"id": r.id, "findings": f"Seen {len(r.images)}.", "impression": "Normal."}) + "\n"
                               for r in records))
        return 0

    out = tmp_path / "prediction.json"
    assert report_rexrank(iu_json, tmp_path / "imgs", out, fake_batch) == 0
    assert seen["CXR38_IM-1911"][0] == [str(tmp_path / "imgs" / "CXR38_IM-1911" / f"{i}.png") for i in (0, 1)]
    assert seen["CXR38_IM-1911"][1] == ["PA", "LATERAL"] and seen["CXR9_IM-1"][2].startswith("Indication:")
    preds = read_rexrank_predictions(out)
    assert preds == {"CXR38_IM-1911": "Findings: Seen 2. Impression: Normal.", "CXR9_IM-1": "Findings: Seen 1. Impression: Normal."}

    def failing_batch(items, out):
        out.write_text(json.dumps({"id": "CXR9_IM-1", "error": "bad image"}) + "\n")
        return 1

    with pytest.raises(InputError, match="got no report"):
        report_rexrank(iu_json, tmp_path / "imgs", tmp_path / "p2.json", failing_batch)
    assert not (tmp_path / "p2.json").exists()
