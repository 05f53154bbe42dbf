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
