"""OOD routing: a film the OOD score calls unreliable gets its findings from the real-film classifier
(``real_finding_classifier``); every other film's report is exactly what it was without that child."""

from __future__ import annotations

import json

import numpy as np
import torch

from crrg.models import create_model, load_pretrained, save_pretrained
from crrg.ood.score import OODAssessment
from crrg.reporting import StudyInput
from crrg.rrg import joint


class StubOOD:
    """Stands in for :class:`crrg.ood.OODScorer`: every film gets the same verdict."""

    def __init__(self, unreliable: bool):
        self.unreliable = unreliable

    def assess(self, image) -> OODAssessment:
        return OODAssessment(5.0 if self.unreliable else 0.5, 2.0, self.unreliable, 99.0)


def _classifier(seed: int, bias: float):
    torch.manual_seed(seed)
    model = create_model("classifier-resnet18", labels=["Edema"], image_encoder={"image_size": 32}).eval()
    with torch.no_grad():  # the two classifiers must disagree on Edema for the tests to tell them apart
        for p in model.parameters():
            if p.ndim == 1 and p.numel() == 1:
                p.fill_(bias)
    return model


def _study() -> StudyInput:
    return StudyInput(images=[np.random.default_rng(0).random((48, 48), dtype=np.float32)], views=["PA"])


def _edema(classifier, study) -> float:
    return round(joint.as_finding_source(classifier).predict_proba(study)["Edema"], 4)


def _model(unreliable: bool):
    from tests.rrg.conftest import untrained_model

    model = untrained_model()
    joint.attach_classifier(model, _classifier(0, -3.0))
    model.ood = StubOOD(unreliable)
    return model


def _comparable(report) -> str:
    out = report.to_dict()
    out.pop("timings_ms", None)
    return json.dumps(out, sort_keys=True)


def test_an_in_distribution_film_is_reported_exactly_as_without_the_real_classifier():
    model, study = _model(unreliable=False), _study()
    before = model.generate_report(study)
    model.real_finding_classifier = _classifier(1, 3.0)
    after = model.generate_report(study)
    assert _comparable(after) == _comparable(before)
    assert "finding_source" not in after.ood
    assert after.probabilities["Edema"] == _edema(model.finding_classifier, study)
    assert after.probabilities["Edema"] != _edema(model.real_finding_classifier, study)


def test_an_unreliable_film_takes_its_findings_from_the_real_classifier(tmp_path):
    model, study = _model(unreliable=True), _study()
    synthetic = model.generate_report(study)
    assert "finding_source" not in synthetic.ood  # no real child: nothing to route to
    model.real_finding_classifier = _classifier(1, 3.0)
    routed = model.generate_report(study)
    assert routed.ood["finding_source"] == "real" and routed.ood["unreliable"]
    assert routed.probabilities["Edema"] == _edema(model.real_finding_classifier, study)
    assert routed.probabilities["Edema"] != synthetic.probabilities["Edema"]
    assert routed.labels["Edema"] == 1  # decided at the real classifier's own threshold
    model.route_ood = False  # the switch benchmarks use for "before"
    assert _comparable(model.generate_report(study)) == _comparable(synthetic)
    model.route_ood = True

    save_pretrained(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["children"]["real_finding_classifier"] == "classifier_real"
    assert "classifier_real/model.safetensors" in config["files"]
    loaded = load_pretrained(tmp_path / "m")
    assert loaded.real_finding_classifier is not None
    assert loaded.context_encoder is not loaded.real_finding_classifier
    loaded.ood = StubOOD(True)
    assert loaded.generate_report(study).probabilities == routed.probabilities
    loaded.real_finding_classifier = None
    save_pretrained(loaded, tmp_path / "m")  # detached: its folder goes
    assert not (tmp_path / "m" / "classifier_real").exists()


def test_the_attach_script_adds_the_child_through_save_and_load(tmp_path):
    import importlib.util
    from pathlib import Path

    from tests.rrg.conftest import untrained_model

    script = Path(__file__).resolve().parents[2] / "scripts" / "attach_real_classifier.py"
    spec = importlib.util.spec_from_file_location("attach_real_classifier", script)
    attach = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(attach)
    model = untrained_model()
    save_pretrained(model, tmp_path / "m", dtype=torch.float16)
    save_pretrained(_classifier(1, 3.0), tmp_path / "real")
    weights = (tmp_path / "m" / "model.safetensors").read_bytes()
    attach.attach(tmp_path / "m", tmp_path / "real")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == weights  # stored dtype kept: nothing else moves
    loaded = load_pretrained(tmp_path / "m")
    assert loaded.real_finding_classifier is not None and loaded.finding_classifier is None
