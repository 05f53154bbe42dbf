import json

from typer.testing import CliRunner

from crrg.cli.main import app

runner = CliRunner()


def test_label_command(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "report": "Heart size is enlarged. Small left effusion."}\n\n{"id": "b", "report": "No acute disease.", "extra": 5}\n')
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["--quiet", "label", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"] and rows[1]["extra"] == 5
    assert rows[0]["labels"]["Cardiomegaly"] == 1 and rows[0]["labels"]["Pleural Effusion"] == 1
    assert rows[0]["labels"]["No Finding"] is None and rows[1]["labels"]["No Finding"] == 1
    assert len(rows[0]["labels"]) == 14


def test_label_reads_manifests(tmp_path):
    src = tmp_path / "m.jsonl"
    src.write_text('{"crrg_manifest": 1}\n{"id": "s1", "findings": "Small pneumothorax.", "impression": ""}\n')
    out = tmp_path / "o.jsonl"
    assert runner.invoke(app, ["-q", "label", str(src), "-o", str(out)]).exit_code == 0
    assert json.loads(out.read_text())["labels"]["Pneumothorax"] == 1


def test_label_bad_input_is_one_line_error(tmp_path):
    from crrg.errors import InputError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "report": "ok"}\n{"report": "no id"}\n')
    out = tmp_path / "o.jsonl"
    result = runner.invoke(app, ["-q", "label", str(bad), "-o", str(out)])
    assert isinstance(result.exception, InputError) and "bad.jsonl:2" in str(result.exception)
    assert not out.exists()  # nothing half-written
    bad.write_text('{"id": "a", "report": 3}\n')
    assert "must be a string" in str(runner.invoke(app, ["-q", "label", str(bad), "-o", str(out)]).exception)
    bad.write_text('{"id": "a", "report": "x"}\n{"id": "a", "report": "y"}\n')
    assert "more than once" in str(runner.invoke(app, ["-q", "label", str(bad), "-o", str(out)]).exception)
    missing = runner.invoke(app, ["-q", "label", str(tmp_path / "none.jsonl"), "-o", str(out)])
    assert isinstance(missing.exception, InputError)


def test_label_cli_exit_code_2(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "crrg", "label", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "o.jsonl")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
