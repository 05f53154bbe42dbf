"""Model-based metric wrappers with local stand-ins for the RadEval objects: their outputs, aggregation and
the one-line messages when the package or the weights are missing."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from crrg.errors import ConfigError
from crrg.evaluation import clinical_models as cm
from crrg.evaluation.blocks import score_all
from crrg.evaluation.label_f1 import binarize, label_f1_scores

NAMES = ["Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
         "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
         "Support Devices", "No Finding"]  # CheXbert's own column order
HYPS = ["cardiomegaly", "possible edema", "normal"]
REFS = ["cardiomegaly and edema", "edema", "normal"]


def row(**values):
    return [values.get(n.replace(" ", "_"), 0) for n in NAMES]


class FakeCheXbert:
    TARGET_NAMES = NAMES
    LABELS = {"cardiomegaly": row(Cardiomegaly=1), "possible edema": row(Edema=-1), "normal": row(No_Finding=1),
              "cardiomegaly and edema": row(Cardiomegaly=1, Edema=1), "edema": row(Edema=1)}

    def get_labels(self, reports, mode="rrg"):
        assert mode == "classification"
        return [self.LABELS[r] for r in reports]

    def get_embeddings(self, reports):
        return [np.array([1.0, len(r) % 3, 0.5]) for r in reports]


class FakeRadGraph:
    def __call__(self, refs, hyps):
        per = [[1.0, 0.5, 0.25], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]  # per level, then per study
        return (None, per, None, None)


class FakeBert:
    def score(self, cands, refs, verbose=False, batch_size=64):
        return None, None, np.array([0.9, 0.5, 0.1])


class FakeRate:
    def compute_score(self, candidate_list, reference_list):
        return [0.8, 0.6, 0.4], None, None


class FakeRadCliq:
    def predict(self, refs, hyps):
        per = np.array([0.5, 1.0, 1.5])
        return 1 / per.mean(), per


@pytest.fixture
def stand_ins(monkeypatch):
    monkeypatch.setattr(cm, "_chexbert_model", lambda device: FakeCheXbert())
    monkeypatch.setattr(cm, "_radgraph_scorer", lambda: FakeRadGraph())
    monkeypatch.setattr(cm, "_bert_scorer", lambda refs, device: FakeBert())
    monkeypatch.setattr(cm, "_rate_scorer", lambda: FakeRate())
    monkeypatch.setattr(cm, "_radcliq_scorer", lambda: FakeRadCliq())
    monkeypatch.setattr(cm, "_gpu_available", lambda: False)
    monkeypatch.setattr(cm, "_radeval", lambda: None)


def test_blocks_from_stand_ins(stand_ins):
    models = cm.ClinicalModels(uncertain="negative")
    blocks = models.blocks(["chexbert", "semb", "radgraph", "bertscore", "ratescore", "radcliq", "green"], HYPS, REFS)
    m = score_all(blocks, np.arange(3))
    pred = binarize(cm.chexbert_label_dicts([FakeCheXbert.LABELS[h] for h in HYPS], NAMES), "negative")
    ref = binarize(cm.chexbert_label_dicts([FakeCheXbert.LABELS[r] for r in REFS], NAMES), "negative")
    expected = label_f1_scores(pred, ref, "chexbert")
    assert m["chexbert_micro5_f1"] == pytest.approx(expected["chexbert_micro5_f1"])
    # by hand: micro-5 pred {Cardio} (uncertain edema dropped), ref {Cardio, Edema, Edema}: p=1, r=1/3 -> F1 1/2
    assert m["chexbert_micro5_f1"] == pytest.approx(0.5)
    assert m["radgraph_simple"] == pytest.approx((1 + 0.5 + 0.25) / 3)
    assert m["radgraph_complete"] == 0.0
    assert m["bertscore"] == pytest.approx(0.5) and m["ratescore"] == pytest.approx(0.6)
    assert m["radcliq_v1"] == pytest.approx(1.0) and m["radcliq_v1_inverse"] == pytest.approx(1.0)
    assert m["semb_score"] == pytest.approx(np.mean([
        float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(
            FakeCheXbert().get_embeddings(HYPS), FakeCheXbert().get_embeddings(REFS))]))
    assert "green" not in m and "GPU" in models.skipped["green"]
    # uncertain counted as positive: the possible edema now matches
    pos = score_all(cm.ClinicalModels(uncertain="positive").blocks(["chexbert"], HYPS, REFS), np.arange(3))
    assert pos["chexbert_micro5_recall"] == pytest.approx(2 / 3)


def test_offline_weights_give_one_line_naming_what_to_download(monkeypatch, stand_ins):
    def offline(device):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files,\nand more")

    monkeypatch.setattr(cm, "_chexbert_model", offline)
    with pytest.raises(ConfigError) as err:
        cm.ClinicalModels().blocks(["chexbert"], HYPS, REFS)
    message = str(err.value)
    assert "\n" not in message
    assert "StanfordAIMI/RRG_scorers (chexbert.pth)" in message and "--metrics-cache" in message


@pytest.mark.skipif(importlib.util.find_spec("radeval") is not None, reason="radeval is installed here")
def test_missing_package_names_the_extra():
    with pytest.raises(ConfigError, match=r"pip install 'crrg\[clinical\]'"):
        cm._radeval()


@pytest.mark.skipif(importlib.util.find_spec("radeval") is not None, reason="radeval is installed here")
def test_cli_without_the_package_is_one_line(tmp_path):
    import subprocess
    import sys

    ref = tmp_path / "r.jsonl"
    ref.write_text(json.dumps({"id": "a", "report": "x"}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "crrg", "evaluate", "--pred", str(ref), "--ref", str(ref),
                           "--metrics", "nlg,chexbert", "--no-meteor", "--metrics-cache", str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "evaluating" not in line]
    assert proc.returncode == 2 and len(lines) == 1 and "crrg[clinical]" in lines[0]


def test_metrics_cache_sets_the_package_caches(monkeypatch, tmp_path):
    for var in ("XDG_CACHE_HOME", "HF_HOME", cm.CACHE_ENV):
        monkeypatch.delenv(var, raising=False)
    assert cm.use_metrics_cache(None) is None
    path = cm.use_metrics_cache(tmp_path / "w")
    import os

    assert os.environ["XDG_CACHE_HOME"] == str(path) and os.environ["HF_HOME"] == str(path / "huggingface")
    monkeypatch.setenv(cm.CACHE_ENV, str(tmp_path / "env"))
    assert cm.use_metrics_cache(None) == (tmp_path / "env").resolve()


def test_cli_model_metrics_with_stand_ins(stand_ins, tmp_path):
    from crrg.cli.main import app

    pred, ref = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    pred.write_text("".join(json.dumps({"id": str(i), "report": t}) + "\n" for i, t in enumerate(HYPS)))
    ref.write_text("".join(json.dumps({"id": str(i), "report": t}) + "\n" for i, t in enumerate(REFS)))
    out = tmp_path / "m.json"
    result = CliRunner().invoke(app, ["--quiet", "evaluate", "--pred", str(pred), "--ref", str(ref), "--metrics",
                                      "all", "--no-meteor", "--metrics-cache", str(tmp_path / "cache"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "1/RadCliQ-v1" in result.output and "CheXbert micro-5 F1" in result.output
    saved = json.loads(out.read_text())
    assert saved["skipped"] == {"green": "needs a GPU (a 7B judge model); none is present"}
    assert saved["chexbert_uncertain"] == "negative" and saved["metrics"]["chexbert_micro5_f1"] == pytest.approx(0.5)
    assert saved["packages"]["pycocoevalcap"] and "radeval" in saved["packages"]
