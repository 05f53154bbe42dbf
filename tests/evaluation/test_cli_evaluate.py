"""crrg evaluate: JSONL or manifest in, table and atomic JSON out, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from crrg.cli.main import app
from crrg.errors import InputError
from crrg.records import StudyRecord, write_manifest

REFS = {
    "s1": "The heart is enlarged. Small left pleural effusion.",
    "s2": "No acute cardiopulmonary abnormality.",
    "s3": "Mild pulmonary edema. No pneumothorax.",
}
PREDS = {
    "s1": "Cardiomegaly with a small left pleural effusion.",
    "s2": "No acute cardiopulmonary abnormality.",
    "s3": "Lungs are clear.",
}


def write_jsonl(path, rows: dict, key: str = "report"):
    path.write_text("".join(json.dumps({"id": k, key: v}) + "\n" for k, v in rows.items()))
    return path


def test_evaluate_writes_table_and_json(tmp_path):
    pred = write_jsonl(tmp_path / "pred.jsonl", PREDS)
    ref = write_jsonl(tmp_path / "ref.jsonl", REFS)
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(app, ["--quiet", "evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(out), "--no-meteor"])
    assert result.exit_code == 0, result.output
    assert "BLEU-4" in result.output and "CE micro-5 F1" in result.output and "METEOR" not in result.output
    saved = json.loads(out.read_text())
    m = saved["metrics"]
    assert saved["n"] == 3 and m["n"] == 3 and "meteor" not in m
    assert 0 < m["bleu_1"] <= 1 and 0 < m["cider"]
    assert m["ce_micro5_precision"] == pytest.approx(1.0)
    from crrg.evaluation import nlg_metrics

    assert m["bleu_4"] == pytest.approx(nlg_metrics(PREDS, REFS, meteor=False)["bleu_4"], abs=1e-12)


def test_manifest_as_reference_and_findings_impression_predictions(tmp_path):
    records = [StudyRecord(id="s1", findings="The heart is enlarged.", impression="Small left pleural effusion.", split="test"),
               StudyRecord(id="s2", impression="No acute cardiopulmonary abnormality.", split="test"),
               StudyRecord(id="s9", findings="Not in the test split.", split="train")]
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, records)
    pred = tmp_path / "pred.jsonl"
    pred.write_text(json.dumps({"id": "s1", "findings": "The heart is enlarged.", "impression": "Small left pleural effusion."}) + "\n"
                    + json.dumps({"id": "s2", "report": "No acute cardiopulmonary abnormality."}) + "\n")
    out = tmp_path / "m.json"
    result = CliRunner().invoke(app, ["--quiet", "evaluate", "--pred", str(pred), "--ref", str(manifest), "--split", "test",
                                      "--out", str(out), "--no-meteor"])
    assert result.exit_code == 0, result.output
    m = json.loads(out.read_text())["metrics"]
    assert m["bleu_1"] == pytest.approx(1.0, abs=1e-6) and m["rouge_l"] == pytest.approx(1.0)


def test_missing_and_extra_ids_are_named(tmp_path):
    pred = write_jsonl(tmp_path / "pred.jsonl", {"s1": "x", "zz": "y"})
    ref = write_jsonl(tmp_path / "ref.jsonl", REFS)
    result = CliRunner().invoke(app, ["evaluate", "--pred", str(pred), "--ref", str(ref), "--no-meteor"])
    assert isinstance(result.exception, InputError)
    message = str(result.exception)
    assert "2 reference id(s) have no prediction (e.g. s2, s3)" in message and "(e.g. zz)" in message


@pytest.mark.parametrize("content, expected", [
    ('{"id": "s1", "report": "x"}\nnot json\n', r"pred.jsonl:2: not valid JSON"),
    ('{"id": "s1", "report": "x"}\n{"id": "s1", "report": "y"}\n', r"pred.jsonl:2: duplicate id 's1'"),
    ('{"report": "x"}\n', r'pred.jsonl:1: expected an object with "id"'),
    ('{"id": "s1", "text": "x"}\n', r'pred.jsonl:1: no "report" field'),
    ('{"id": "s1", "report": 3}\n', r'pred.jsonl:1: "report" must be a string'),
    ("\n", r"contains no reports"),
])
def test_malformed_prediction_files(tmp_path, content, expected):
    from crrg.cli.evaluate import read_reports

    path = tmp_path / "pred.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=expected):
        read_reports(path)


def test_cli_error_is_one_line_with_exit_code_2(tmp_path):
    ref = write_jsonl(tmp_path / "ref.jsonl", REFS)
    proc = subprocess.run([sys.executable, "-m", "crrg", "evaluate", "--pred", str(tmp_path / "missing.jsonl"), "--ref", str(ref)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing.jsonl does not exist" in lines[0]


def test_two_systems_bootstrap_protocol_in_table_and_json(tmp_path):
    pred = write_jsonl(tmp_path / "good.jsonl", PREDS)
    other = write_jsonl(tmp_path / "same.jsonl", REFS)
    ref = write_jsonl(tmp_path / "ref.jsonl", REFS)
    out = tmp_path / "metrics.json"
    result = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["--quiet", "evaluate", "--pred", str(pred), "--pred", str(other), "--ref", str(ref),
                                      "--bootstrap", "30", "--protocol", "r2gen", "--dataset", "iu_xray",
                                      "--ce-convention", "chexbert", "--no-meteor", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "protocol r2gen, dataset iu_xray" in result.output and "same - good" in result.output
    saved = json.loads(out.read_text())
    assert saved["protocol"]["name"] == "r2gen" and saved["protocol"]["max_seq_length"] == 60
    assert saved["ce"] == {"labeler": "crrg.labeler", "convention": "chexbert", "uncertain": "negative"}
    assert saved["packages"]["pycocoevalcap"] and set(saved["systems"]) == {"good", "same"}
    boot = saved["bootstrap"]
    assert boot["resamples"] == 30 and boot["level"] == 0.95
    assert boot["systems"]["same"]["bleu_4"] == pytest.approx([1.0, 1.0], abs=1e-6)  # a perfect system stays perfect
    diff = boot["differences"]["same - good"]["bleu_1"]
    assert diff["difference"] > 0 and diff["interval"][0] <= diff["difference"] <= diff["interval"][1]
    assert "ce_micro14_f1" in saved["metrics"]


def test_r2gen_and_coco_give_different_numbers_on_the_same_reports(tmp_path):
    pred = write_jsonl(tmp_path / "pred.jsonl", PREDS)
    ref = write_jsonl(tmp_path / "ref.jsonl", REFS)
    values = {}
    for proto in ("coco", "r2gen"):
        out = tmp_path / f"{proto}.json"
        args = ["--quiet", "evaluate", "--pred", str(pred), "--ref", str(ref), "--no-meteor", "--no-clinical",
                "--protocol", proto, "--dataset", "iu_xray", "--out", str(out)]
        assert CliRunner().invoke(app, args).exit_code == 0
        values[proto] = json.loads(out.read_text())["metrics"]["bleu_1"]
    assert values["coco"] != pytest.approx(values["r2gen"])  # r2gen keeps " . " tokens


@pytest.mark.parametrize("args, message", [
    (["--protocol", "r2gen"], "needs --dataset"),
    (["--metrics", "nlg,bleurt"], "unknown metric set"),
    (["--ce-convention", "mine"], "--ce-convention must be"),
    (["--r2gen-ann", "x.json"], "only applies to --protocol r2gen"),
])
def test_bad_options_are_input_errors(tmp_path, args, message):
    ref = write_jsonl(tmp_path / "ref.jsonl", REFS)
    result = CliRunner().invoke(app, ["evaluate", "--pred", str(ref), "--ref", str(ref), "--no-meteor", *args])
    assert isinstance(result.exception, InputError) and message in str(result.exception)


def test_summarize_seeds(tmp_path):
    runs = []
    for i, (b, c) in enumerate([(0.30, 1.0), (0.34, 1.2), (0.32, 1.1)]):
        path = tmp_path / f"seed{i}.json"
        path.write_text(json.dumps({"metrics": {"bleu_1": b, "cider": c, "n": 10, "ce_f1_per_observation": {}}}))
        runs.append(str(path))
    out = tmp_path / "summary.json"
    result = CliRunner().invoke(app, ["--quiet", "summarize-seeds", *runs, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "0.3200 ± 0.0200" in result.output and "BLEU-1" in result.output
    summary = json.loads(out.read_text())["metrics"]
    assert summary["cider"]["mean"] == pytest.approx(1.1) and summary["cider"]["sd"] == pytest.approx(0.1)
    assert "n" not in summary and summary["bleu_1"]["n"] == 3
    result = CliRunner().invoke(app, ["summarize-seeds", runs[0]])
    assert isinstance(result.exception, InputError) and "at least two runs" in str(result.exception)
