"""benchmarks/synth_subtypes.py splits a label's AUC by what the generator inserted."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "synth_subtypes.py"


@pytest.fixture(scope="module")
def subtypes():
    spec = importlib.util.spec_from_file_location("synth_subtypes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_subtype_names_size_bins_and_devices(subtypes):
    assert subtypes.subtype({"kind": "nodule", "params": {"size_mm": 12}}) == "nodule 10-20 mm"
    assert subtypes.subtype({"kind": "nodule", "params": {"size_mm": 8}}) == "nodule 0-10 mm"
    assert subtypes.subtype({"kind": "mass", "params": {"size_mm": 46}}) == "mass >= 30 mm"
    assert subtypes.subtype({"kind": "devices", "params": {"kinds": ["ett"]}}) == "devices: ett only"
    assert subtypes.subtype({"kind": "devices", "params": {"kinds": ["ett", "pacemaker"]}}) == "devices: 2 kinds"
    assert subtypes.subtype({"kind": "effusion", "severity": "small", "side": "left"}) == "effusion"


def test_labels_come_from_the_generators_sentences(subtypes):
    assert "Lung Lesion" in subtypes.finding_labels({"kind": "nodule", "side": "right", "location": "right upper lung zone",
                                                     "params": {"size_mm": 12}})
    assert "Fracture" in subtypes.finding_labels({"kind": "fracture", "severity": "acute", "side": "left", "params": {"rib": 5}})


def test_each_group_is_scored_against_all_negatives(subtypes):
    nodule = {"kind": "nodule", "side": "right", "location": "right upper lung zone", "params": {"size_mm": 12}}
    mass = {"kind": "mass", "side": "left", "location": "left lower lung zone", "params": {"size_mm": 40}}
    preds = [{"id": "a", "probabilities": {"Lung Lesion": 0.9}, "target": {"Lung Lesion": 1}},
             {"id": "b", "probabilities": {"Lung Lesion": 0.2}, "target": {"Lung Lesion": 1}},
             {"id": "c", "probabilities": {"Lung Lesion": 0.5}, "target": {"Lung Lesion": 0}},
             {"id": "d", "probabilities": {"Lung Lesion": 0.1}, "target": {"Lung Lesion": 0}},
             {"id": "e", "probabilities": {"Lung Lesion": 0.3}, "target": {"Lung Lesion": None}}]
    rows = subtypes.subtype_aucs(preds, {"a": [mass], "b": [nodule]})
    by_group = {r["subtype"]: r for r in rows}
    assert by_group["mass >= 30 mm"]["auc"] == 1.0 and by_group["mass >= 30 mm"]["positives"] == 1
    assert by_group["nodule 10-20 mm"]["auc"] == 0.5


def test_rrg_head_predictions_use_the_classifier_evaluation_targets(subtypes, tmp_path):
    """The --rrg-model path scores the frontal image with the model's own finding head, and its
    targets are those of `crrg evaluate-classifier --unknown negative`: uncertain left out, absent negative."""
    from crrg.models.registry import save_pretrained
    from crrg.observations import CHEXPERT_14
    from crrg.records import read_manifest, write_manifest
    from tests.rrg.conftest import make_studies, untrained_model

    data = tmp_path / "synth"
    manifest = make_studies(data, n=4)
    records = read_manifest(manifest)
    records[0].labels["Pneumonia"] = -1
    write_manifest(manifest, records)
    save_pretrained(untrained_model(), tmp_path / "model")

    preds = subtypes.rrg_head_predictions(str(tmp_path / "model"), data, split="train")
    assert [p["id"] for p in preds] == ["s0", "s1"]
    for p in preds:
        assert list(p["probabilities"]) == list(CHEXPERT_14)
        assert all(0.0 <= v <= 1.0 for v in p["probabilities"].values())
    assert preds[0]["target"]["Pneumonia"] is None
    assert preds[1]["target"]["Pneumonia"] == 0
    assert preds[0]["target"]["No Finding"] == 1 and preds[1]["target"]["Lung Opacity"] == 1
