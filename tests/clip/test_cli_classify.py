"""crrg classify / evaluate-classifier end to end on saved tiny models; user errors are one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crrg.cli.main import app
from crrg.errors import ImageError, InputError


def _images(tiny_data: Path) -> list[str]:
    return [str(tiny_data.parent / "images" / f"s{i}.png") for i in (0, 1)]


def test_classify_json_with_supervised_model_uses_stored_thresholds(saved_tiny_classifier, tiny_data):
    result = CliRunner().invoke(app, ["--quiet", "classify", *_images(tiny_data), "--model", str(saved_tiny_classifier), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [Path(r["image"]).name for r in rows] == ["s0.png", "s1.png"]
    for row in rows:
        assert set(row["probabilities"]) == {"Pleural Effusion", "Cardiomegaly"}
        for name, t in (("Pleural Effusion", 0.25), ("Cardiomegaly", 0.75)):
            assert row["labels"][name] == int(row["probabilities"][name] >= t)


def test_classify_zero_shot_with_custom_prompts_table(saved_tiny_clip, tiny_data, tmp_path):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"observations": {"Fluid": {"positive": ["effusion"], "negative": ["no effusion"]}}}))
    result = CliRunner().invoke(app, ["--quiet", "classify", *_images(tiny_data), "--model", str(saved_tiny_clip), "--prompts", str(prompts)])
    assert result.exit_code == 0, result.output
    assert "Fluid" in result.stdout and "s0.png" in result.stdout and "Cardiomegaly" not in result.stdout


def test_classify_missing_image_is_an_input_error(saved_tiny_classifier, tmp_path):
    result = CliRunner().invoke(app, ["classify", str(tmp_path / "nope.png"), "--model", str(saved_tiny_classifier)])
    assert isinstance(result.exception, InputError) and "nope.png" in str(result.exception)


def test_classify_corrupt_image_prints_one_line_and_exits_2(saved_tiny_classifier, tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    proc = subprocess.run([sys.executable, "-m", "crrg", "--quiet", "classify", str(bad), "--model", str(saved_tiny_classifier)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "corrupt.png" in lines[0] and "Traceback" not in proc.stderr


def test_classify_corrupt_image_raises_image_error(saved_tiny_classifier, tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"not an image at all")
    result = CliRunner().invoke(app, ["classify", str(bad), "--model", str(saved_tiny_classifier)])
    assert isinstance(result.exception, ImageError)


def test_classify_rejects_a_folder_that_is_not_a_model(tmp_path, tiny_data):
    result = CliRunner().invoke(app, ["classify", _images(tiny_data)[0], "--model", str(tmp_path)])
    assert isinstance(result.exception, InputError) and "not a saved crrg model" in str(result.exception)


def test_evaluate_classifier_on_manifest_writes_metrics_predictions_and_roc(saved_tiny_clip, tiny_data, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["--quiet", "evaluate-classifier", "--model", str(saved_tiny_clip), "--data", str(tiny_data),
                                      "--split", "all", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 24
    # fixture labels: effusion and cardiomegaly both classes -> AUC; labels never mentioned -> skipped
    assert metrics["auc"]["Pleural Effusion"] is not None and metrics["auc"]["Edema"] is None
    assert metrics["labels_with_auc"] == 3  # No Finding, Cardiomegaly, Pleural Effusion; Pneumothorax is all 0
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 24
    assert "macro AUC" in result.stdout


def test_evaluate_classifier_on_image_folder_needs_matching_labels(saved_tiny_classifier, tmp_path):
    from PIL import Image

    for name in ("0_normal", "1_abnormal"):
        (tmp_path / "f" / name).mkdir(parents=True)
        Image.new("L", (16, 16)).save(tmp_path / "f" / name / "a.png")
    result = CliRunner().invoke(app, ["evaluate-classifier", "--model", str(saved_tiny_classifier), "--data", str(tmp_path / "f")])
    assert isinstance(result.exception, InputError) and "abnormal" in str(result.exception)


def test_evaluate_classifier_label_subset_and_unknown_as_negative(saved_tiny_clip, tiny_data, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["--quiet", "evaluate-classifier", "--model", str(saved_tiny_clip), "--data", str(tiny_data),
                                      "--split", "all", "--labels", "Cardiomegaly,Edema", "--unknown", "negative", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["auc"]) == ["Cardiomegaly", "Edema"]
    assert metrics["support"]["Edema"] == {"positive": 0, "negative": 24}  # never mentioned -> negative
    bad = CliRunner().invoke(app, ["evaluate-classifier", "--model", str(saved_tiny_clip), "--data", str(tiny_data), "--labels", "Nonsense"])
    assert isinstance(bad.exception, InputError) and "Nonsense" in str(bad.exception)
