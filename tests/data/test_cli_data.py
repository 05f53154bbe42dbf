import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from crrg.cli.main import app
from crrg.records import read_manifest

from .test_iu_xray import openi_xml
from .test_mimic_cxr import make_mimic

runner = CliRunner()


def test_prepare_iu_xray_then_stats_json(tmp_path: Path):
    reports = tmp_path / "ecgen-radiology"
    reports.mkdir()
    (reports / "1.xml").write_text(openi_xml(1, ["CXR1_IM-0001-3001"], findings="One two three.", impression="Four."))
    (reports / "2.xml").write_text(openi_xml(2, []))
    (tmp_path / "split.json").write_text(json.dumps({"train": [{"id": "1"}], "val": [], "test": [{"id": "2"}]}))
    out = tmp_path / "out" / "iu.jsonl"
    result = runner.invoke(app, ["data", "prepare", "iu-xray", "--reports", str(reports), "--split",
                                 str(tmp_path / "split.json"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [(r.id, r.split) for r in read_manifest(out)] == [("CXR1", "train"), ("CXR2", "test")]
    result = runner.invoke(app, ["data", "stats", str(out), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["studies"] == 2 and stats["splits"] == {"train": 1, "test": 1}
    assert stats["views"] == {"unknown": 1}
    assert stats["report_words"]["mean"] == 5.5  # (4 + 7) / 2 words
    table = runner.invoke(app, ["data", "stats", str(out)])
    assert table.exit_code == 0 and "label prevalence" in table.stdout and "train" in table.stdout


def test_prepare_mimic_with_view_filter(tmp_path: Path):
    root = make_mimic(tmp_path / "mimic")
    out = tmp_path / "m.jsonl"
    result = runner.invoke(app, ["data", "prepare", "mimic-cxr", "--root", str(root), "--out", str(out),
                                 "--views", "frontal", "--require-report"])
    assert result.exit_code == 0, result.output
    records = read_manifest(out)
    # s50000003 has no report, s50000004 only a lateral image
    assert [r.id for r in records] == ["s50000001", "s50000002"]
    assert [im.view for r in records for im in r.images] == ["PA", "AP"]


def test_prepare_csv(tmp_path: Path):
    (tmp_path / "t.csv").write_text("image,report,Edema\na.png,FINDINGS: Edema.,1\n")
    out = tmp_path / "m.jsonl"
    result = runner.invoke(app, ["data", "prepare", "csv", str(tmp_path / "t.csv"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (record,) = read_manifest(out)
    assert record.findings == "Edema." and record.labels["Edema"] == 1 and Path(record.images[0].path).name == "a.png"
    assert record.split == "unassigned"
    result = runner.invoke(app, ["data", "prepare", "csv", str(tmp_path / "t.csv"), "--out", str(out),
                                 "--assign-splits", "0,0,1"])
    assert result.exit_code == 0, result.output
    assert read_manifest(out)[0].split == "test"


def test_prepare_csv_one_line_report_keeps_impression(tmp_path: Path):
    (tmp_path / "t.csv").write_text('image,report\na.png,"FINDINGS: Small effusion. IMPRESSION: Effusion."\n')
    out = tmp_path / "m.jsonl"
    result = runner.invoke(app, ["data", "prepare", "csv", str(tmp_path / "t.csv"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (record,) = read_manifest(out)
    assert (record.findings, record.impression) == ("Small effusion.", "Effusion.")


def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path):
    (tmp_path / "t.csv").write_text("file\nx.png\n")
    proc = subprocess.run([sys.executable, "-m", "crrg", "data", "prepare", "csv", str(tmp_path / "t.csv"),
                           "--out", str(tmp_path / "m.jsonl")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "neither image columns" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.jsonl").exists()


def test_quiet_silences_progress_and_status(tmp_path: Path):
    (tmp_path / "t.csv").write_text("image,report\na.png,Clear.\n")
    args = ["data", "prepare", "csv", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m.jsonl")]
    loud = runner.invoke(app, args)
    quiet = runner.invoke(app, ["--quiet", *args])
    assert loud.exit_code == quiet.exit_code == 0
    assert "wrote 1 studies" in loud.output
    assert quiet.output == ""
