import numpy as np
import torch

from crrg.observations import CHEXPERT_14
from crrg.reporting import StudyInput
from crrg.rrg import joint


def _probs(**named):
    p = torch.full((len(CHEXPERT_14),), 0.1)
    for name, value in named.items():
        p[CHEXPERT_14.index(name.replace("_", " "))] = value
    return p


def test_rerank_follows_the_classifier():
    candidates = ["the heart size is normal", "the heart is enlarged"]
    assert joint.rerank(candidates, _probs(Cardiomegaly=0.95), abnormal_prob=0.9) == "the heart is enlarged"
    assert joint.rerank(candidates, _probs(Cardiomegaly=0.02), abnormal_prob=0.1) == "the heart size is normal"


def test_agreement_scores_negations_against_the_classifier():
    labels = {"Pleural Effusion": 0}
    assert joint.agreement(labels, _probs(Pleural_Effusion=0.05), 0.1) > joint.agreement(labels, _probs(Pleural_Effusion=0.9), 0.1)


def test_consistency_lists_the_disagreements():
    probs = {name: 0.0 for name in CHEXPERT_14}
    probs["Cardiomegaly"] = 0.9
    probs["Edema"] = 0.8
    out = joint.consistency("The heart is enlarged. No pulmonary edema.", probs)
    assert out["disagreements"] == ["Edema"]
    assert 0 < out["agreement"] < 1


class _Classifier:
    """Stands in for crrg.clip.classifier.ImageClassifier: labels + probabilities(images)."""

    labels = list(CHEXPERT_14)

    def probabilities(self, images):
        return np.array([[float(images[0].mean())] * len(self.labels)])


def test_external_classifier_replaces_the_finding_head():
    from tests.rrg.conftest import untrained_model

    model = untrained_model()
    joint.attach_classifier(model, joint.ImageClassifierFindings(_Classifier()))
    study = StudyInput(images=[np.zeros((40, 40), np.float32), np.full((64, 64), 0.75, np.float32)],
                       views=["LATERAL", "PA"])  # the adapter must read the frontal image
    report = model.generate_report(study)
    assert all(abs(p - 0.75) < 1e-4 for p in report.probabilities.values())


class _TwoLabelClassifier:
    labels = ["Pleural Effusion", "Edema"]
    thresholds = {"Pleural Effusion": 0.2, "Edema": 0.9}

    def probabilities(self, images):
        return np.array([[0.3, 0.6]])


def test_external_classifier_decides_only_its_labels_at_its_own_thresholds():
    import torch

    source = joint.ImageClassifierFindings(_TwoLabelClassifier())
    study = StudyInput(images=[np.zeros((32, 32), np.float32)], views=["PA"])
    own = torch.full((len(CHEXPERT_14),), 0.05)
    probs, thresholds = joint.merge_external(source, study, own, {"Edema": 0.4, "Lung Opacity": 0.01})
    j = {name: i for i, name in enumerate(CHEXPERT_14)}
    assert abs(float(probs[j["Pleural Effusion"]]) - 0.3) < 1e-6 and abs(float(probs[j["Edema"]]) - 0.6) < 1e-6
    assert abs(float(probs[j["Lung Opacity"]]) - 0.05) < 1e-6  # not the classifier's: the rrg head keeps it
    decisions = joint.finding_decisions(probs, thresholds)
    assert decisions["Pleural Effusion"] is True  # 0.3 >= the classifier's 0.2, though < the default 0.5
    assert decisions["Edema"] is False  # 0.6 < the classifier's 0.9 (the rrg head's 0.4 no longer applies)
    assert decisions["Lung Opacity"] is True  # the rrg head's own threshold


def test_an_attached_classifier_is_saved_inside_the_model_and_used_after_loading(tmp_path):
    from crrg.models import create_model, load_pretrained, save_pretrained
    from tests.rrg.conftest import untrained_model

    model = untrained_model()
    clf = create_model("classifier-resnet18", labels=["Pleural Effusion", "Cardiomegaly"], image_encoder={"image_size": 32})
    clf.thresholds = {"Pleural Effusion": 0.123, "Cardiomegaly": 0.5}
    joint.attach_classifier(model, joint.ImageClassifierFindings(clf.eval()))
    study = StudyInput(images=[np.random.default_rng(0).random((48, 48), dtype=np.float32)], views=["PA"])
    before = model.generate_report(study)
    save_pretrained(model, tmp_path / "rrg")
    assert (tmp_path / "rrg" / "classifier" / "model.safetensors").is_file()
    again = load_pretrained(tmp_path / "rrg")
    assert again.finding_source is not None and again.finding_source.thresholds["Pleural Effusion"] == 0.123
    after = again.generate_report(study)
    assert after.probabilities == before.probabilities and after.report == before.report



def test_the_attached_classifier_is_saved_in_the_model_dtype_and_a_stale_one_is_removed(tmp_path):
    import torch
    from safetensors import safe_open

    from crrg.models import create_model, load_pretrained, save_pretrained
    from tests.rrg.conftest import untrained_model

    model = untrained_model()
    clf = create_model("classifier-resnet18", labels=["Pleural Effusion"], image_encoder={"image_size": 32})
    joint.attach_classifier(model, joint.ImageClassifierFindings(clf.eval()))
    save_pretrained(model, tmp_path / "rrg", dtype=torch.float16)
    with safe_open(str(tmp_path / "rrg" / "classifier" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
    save_pretrained(untrained_model(), tmp_path / "rrg")  # same folder, no classifier attached now
    assert not (tmp_path / "rrg" / "classifier").exists()
    assert load_pretrained(tmp_path / "rrg").finding_source is None
