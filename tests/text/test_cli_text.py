import json

from typer.testing import CliRunner

from crrg.cli.main import app

runner = CliRunner()


def test_clean_and_sentences_from_stdin():
    result = runner.invoke(app, ["-q", "text", "clean"], input="1. Normal chest x-XXXX.\n2. No  effusion..\n")
    assert result.exit_code == 0 and result.stdout.strip() == "Normal chest x-ray. No effusion."
    result = runner.invoke(app, ["-q", "text", "sentences"], input="1. No effusion. 2. Nodule of 2.5 cm.")
    assert result.stdout.splitlines() == ["No effusion.", "Nodule of 2.5 cm."]
    result = runner.invoke(app, ["-q", "text", "normalize", "--lines"], input="No Effusion.\nHeart,normal\n")
    assert result.stdout.splitlines() == ["no effusion .", "heart , normal"]


def test_text_file_argument_and_missing(tmp_path):
    f = tmp_path / "r.txt"
    f.write_text("Heart normal. Lungs clear.")
    assert runner.invoke(app, ["-q", "text", "sentences", str(f)]).stdout.splitlines() == ["Heart normal.", "Lungs clear."]
    assert "does not exist" in str(runner.invoke(app, ["-q", "text", "clean", str(tmp_path / "x.txt")]).exception)


def test_train_tokenizer_command(tmp_path):
    from crrg.text.tokenizer import load_tokenizer

    manifest = tmp_path / "m.jsonl"
    rows = [{"crrg_manifest": 1}] + [
        {"id": str(i), "findings": "The heart is normal in size. No pleural effusion.", "impression": "No acute disease.",
         "split": "train" if i % 2 else "test"} for i in range(40)]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "tok"
    result = runner.invoke(app, ["-q", "text", "train-tokenizer", str(manifest), "--out", str(out), "--vocab-size", "300", "--split", "train"])
    assert result.exit_code == 0, result.output
    tok = load_tokenizer(out)
    assert tok.decode(tok("No acute disease.")["input_ids"], skip_special_tokens=True).strip() == "no acute disease."
    bad = runner.invoke(app, ["-q", "text", "train-tokenizer", str(manifest), "--out", str(out), "--split", "val"])
    assert "no reports in split" in str(bad.exception)
