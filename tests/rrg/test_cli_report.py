import json

from typer.testing import CliRunner

from crrg.cli.main import app
from crrg.observations import CHEXPERT_14
from tests.image.films import write_chest_film

runner = CliRunner()


def _png(path, seed=0):
    return write_chest_film(path, seed, (80, 72))  # a film: the chest-radiograph gate refuses noise


def test_report_text_and_json(saved_tiny_model, tmp_path):
    frontal, lateral = _png(tmp_path / "f.png"), _png(tmp_path / "l.png", 1)
    text = runner.invoke(app, ["report", str(frontal), str(lateral), "--model", str(saved_tiny_model), "--beams", "2"])
    assert text.exit_code == 0, text.output
    assert "FINDINGS:" in text.output and "IMPRESSION:" in text.output and "Finding probabilities" in text.output
    out = runner.invoke(app, ["-q", "report", str(frontal), str(lateral), "--model", str(saved_tiny_model),
                              "--format", "json", "--sample", "--top-p", "0.8", "--temperature", "0.7"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    assert payload["views"] == ["PA", "LATERAL"]
    assert payload["report"] and len(payload["regions"]) == 29 and set(payload["probabilities"]) == set(CHEXPERT_14)
    regional = [s for s in payload["sentences"] if s["region"]]
    assert regional and all(len(s["box"]) == 4 for s in regional)
    assert all(s["box"] is None for s in payload["sentences"] if not s["region"])  # whole-study sentences
    target = tmp_path / "r.json"
    done = runner.invoke(app, ["-q", "report", str(frontal), "--model", str(saved_tiny_model), "--format", "json",
                               "--out", str(target)])
    assert done.exit_code == 0 and json.loads(target.read_text())["findings"]


def _one_line_error(args):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "crrg", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    return lines[0]


def test_bad_input_is_one_line_error(saved_tiny_model, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert "bad.png" in _one_line_error(["report", str(bad), "--model", str(saved_tiny_model)])
    missing = _one_line_error(["report", str(tmp_path / "missing.png"), "--model", str(saved_tiny_model)])
    assert "no such file" in missing or "does not exist" in missing
    assert "saved crrg model" in _one_line_error(["-q", "report", str(_png(tmp_path / "a.png")), "--model", str(tmp_path)])
    assert "--format" in _one_line_error(["report", str(_png(tmp_path / "a.png")), "--model", str(saved_tiny_model),
                                          "--format", "xml"])


def test_consensus_option_reaches_the_generator(saved_tiny_model, tmp_path, monkeypatch):
    import crrg.rrg.decoding as rrg_model

    calls = []
    original = rrg_model.consensus
    monkeypatch.setattr(rrg_model, "consensus", lambda c, w=None: calls.append(len(c)) or original(c, w))
    frontal = _png(tmp_path / "f.png")
    out = runner.invoke(app, ["-q", "report", str(frontal), "--model", str(saved_tiny_model), "--consensus", "3"])
    assert out.exit_code == 0, out.output
    assert calls and set(calls) == {3}
    calls.clear()
    out = runner.invoke(app, ["-q", "report", str(frontal), "--model", str(saved_tiny_model), "--consensus", "0"])
    assert out.exit_code == 0, out.output
    assert not calls


def test_anatomical_order_option_turns_the_learned_order_off(saved_tiny_model, tmp_path, monkeypatch):
    import crrg.rrg.decoding as rrg_model
    import crrg.rrg.model as rrg_model_module

    orders = []
    original = rrg_model.assemble_report
    monkeypatch.setattr(rrg_model, "assemble_report", lambda *a, **kw: orders.append(kw["order"]) or original(*a, **kw))
    monkeypatch.setattr(rrg_model_module.SentenceOrder, "load", classmethod(lambda cls, folder: cls({("a", "b"): 1})))
    frontal = _png(tmp_path / "f.png")
    for flag in ([], ["--anatomical-order"]):
        out = runner.invoke(app, ["-q", "report", str(frontal), "--model", str(saved_tiny_model)] + flag)
        assert out.exit_code == 0, out.output
    assert orders[0] is not None and orders[1] is None


def test_rexrank_input_json_gives_the_submission_json(saved_tiny_model, tmp_path):
    """`crrg report IN.json --rexrank-images ROOT --out SUB.json`: every ReXrank entry comes back unchanged
    with its `model_prediction`, through the same batch mode as a manifest."""
    root = tmp_path / "images"
    for folder in ("CXR1_IM-1", "CXR2_IM-2"):
        (root / folder).mkdir(parents=True)
    _png(root / "CXR1_IM-1" / "0.png", seed=1)
    _png(root / "CXR2_IM-2" / "0.png", seed=2)
    entry = {"image_path": ["CXR1_IM-1/0.png"], "key_image_path": "CXR1_IM-1/0.png", "frontal_lateral": ["Frontal"],
             "section_findings": "Lungs are clear.", "section_impression": "Normal.", "split": "test", "context": ""}
    second = dict(entry, image_path=["CXR2_IM-2/0.png"], key_image_path="CXR2_IM-2/0.png")
    inp = tmp_path / "ReXRank_IUXray_test.json"
    inp.write_text(json.dumps({"CXR1_IM-1": entry, "CXR2_IM-2": second}))
    sub = tmp_path / "submission.json"
    out = runner.invoke(app, ["-q", "report", str(inp), "--rexrank-images", str(root), "--out", str(sub),
                              "--model", str(saved_tiny_model)])
    assert out.exit_code == 0, out.output
    got = json.loads(sub.read_text())
    assert set(got) == {"CXR1_IM-1", "CXR2_IM-2"}
    assert all(v["model_prediction"].strip() for v in got.values())
    assert got["CXR1_IM-1"]["section_findings"] == "Lungs are clear."
