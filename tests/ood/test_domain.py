"""The synthetic-vs-real discriminant that picks a film's finding source (crrg.ood.domain)."""

import json

import numpy as np
import pytest

from crrg.ood import FeatureStats
from crrg.ood.domain import DomainDiscriminant
from crrg.ood.score import OODAssessment, OODScorer
from tests.ood.test_ood import TinyClassifier, low_rank


def two_domains(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic-like and real-like features: the same subspace, the real ones shifted along one axis
    by less than their spread, so no single feature's threshold separates them perfectly."""
    synthetic = low_rank(n, seed=seed)
    real = low_rank(n, seed=seed + 100) + np.r_[3.0, np.zeros(23)]
    return synthetic, real


def test_fit_separates_the_domains_and_says_how_well_by_cross_validation():
    synthetic, real = two_domains(300)
    domain = DomainDiscriminant.fit(synthetic, real, c=1.0, meta={"data": "toy"})
    held_synthetic, held_real = two_domains(200, seed=7)
    assert np.mean(domain.probability(held_synthetic) > 0.5) < 0.1
    assert np.mean(domain.probability(held_real) > 0.5) > 0.9
    assert domain.meta["cv_balanced_accuracy"] > 0.9 and domain.meta["data"] == "toy"
    assert domain.meta["n_synthetic"] == domain.meta["n_real"] == 300


def test_fit_on_indistinguishable_films_reports_chance_accuracy():
    a, b = low_rank(200, seed=1), low_rank(200, seed=2)
    assert DomainDiscriminant.fit(a, b).meta["cv_balanced_accuracy"] < 0.65


def test_too_few_films_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 5 synthetic"):
        DomainDiscriminant.fit(low_rank(3), low_rank(50))


def test_the_discriminant_is_stored_with_the_ood_statistics(tmp_path):
    stats = FeatureStats.fit(low_rank(200), k=4)
    stats.calibrate(low_rank(100, seed=1))
    stats.save(tmp_path)
    assert FeatureStats.load(tmp_path).domain is None  # a folder fitted before the discriminant existed
    stats.domain = DomainDiscriminant.fit(*two_domains(100))
    stats.save(tmp_path)
    again = FeatureStats.load(tmp_path)
    x = np.concatenate(two_domains(10, seed=3))
    np.testing.assert_allclose(again.domain.probability(x), stats.domain.probability(x), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(again.score(x), stats.score(x), rtol=1e-5)
    assert again.domain.meta == json.loads(json.dumps(stats.domain.meta))


def test_the_verdict_not_the_ood_flag_chooses_the_finding_source():
    # a real film scoring under the OOD threshold is still read as real; a synthetic film in the tail
    # of the OOD score is still read as synthetic
    assert OODAssessment(3.7, 5.0, False, 99.0, real_probability=0.97).reads_as_real
    assert not OODAssessment(5.6, 5.0, True, 99.0, real_probability=0.02).reads_as_real
    # without a discriminant, the flag decides, and the JSON is what it always was
    old = OODAssessment(5.6, 5.0, True, 99.0)
    assert old.reads_as_real and "real_probability" not in old.to_dict()
    assert OODAssessment(1.0, 5.0, False, 99.0, real_probability=0.1).to_dict()["real_probability"] == 0.1


def test_the_scorer_gives_each_film_its_real_probability():
    classifier = TinyClassifier()
    # features are (mean, std) of the image: "real" films are brighter
    dark = [np.full((8, 8), v, np.float32) + np.random.default_rng(i).random((8, 8)).astype(np.float32) * 0.1
            for i, v in enumerate(np.linspace(0.1, 0.3, 40))]
    bright = [im + 0.5 for im in dark]
    feats = lambda ims: np.array([[im.mean(), im.std()] for im in ims])  # noqa: E731
    stats = FeatureStats.fit(feats(dark), k=1)
    stats.calibrate(feats(dark))
    stats.domain = DomainDiscriminant.fit(feats(dark), feats(bright), c=10.0)
    scorer = OODScorer(stats, classifier)
    assert scorer.assess(dark[3]).real_probability < 0.5 < scorer.assess(bright[3]).real_probability
    assert scorer.assess(bright[3]).reads_as_real and not scorer.assess(dark[3]).reads_as_real


class VerdictOOD:
    """Stands in for the model's OOD scorer: one assessment for every film."""

    def __init__(self, assessment: OODAssessment):
        self.assessment = assessment

    def assess(self, image) -> OODAssessment:
        return self.assessment


@pytest.mark.parametrize("unreliable,real_probability,routed", [(False, 0.97, True), (True, 0.02, False)])
def test_the_model_routes_by_the_verdict(unreliable, real_probability, routed):
    from tests.rrg.test_ood_routing import _classifier, _edema, _model, _study

    model, study = _model(unreliable=unreliable), _study()
    model.real_finding_classifier = _classifier(1, 3.0)
    model.ood = VerdictOOD(OODAssessment(5.5 if unreliable else 3.7, 5.0, unreliable, 99.0, real_probability))
    report = model.generate_report(study)
    source = model.real_finding_classifier if routed else model.finding_classifier
    assert report.probabilities["Edema"] == _edema(source, study)
    assert (report.ood.get("finding_source") == "real") is routed
    assert report.ood["real_probability"] == real_probability


@pytest.mark.slow
def test_fit_command_adds_a_discriminant_to_a_model_folder(tmp_path, shared_data):
    import shutil

    from crrg.models.registry import bundled_models_dir
    from crrg.ood.fit import main
    from tests.conftest import REPO

    folder = tmp_path / "model"
    shutil.copytree(bundled_models_dir() / "crrg-default", folder)
    examples = REPO / "examples"
    manifest = tmp_path / "synthetic.jsonl"
    studies = [{"id": f"s{i}", "split": "train", "images": [{"path": str(examples / f"{name}_frontal.png"), "view": "PA"}]}
               for i, name in enumerate(["normal", "heart-failure", "pneumothorax", "devices"] * 2)]
    manifest.write_text("\n".join(json.dumps(s) for s in [{"crrg_manifest": 1}, *studies]) + "\n")
    real = sorted((shared_data / "nih1000_64px" / "train").rglob("*.png"))[:8]
    (tmp_path / "real.txt").write_text("\n".join(str(p) for p in real) + "\n")
    main(["domain", "--model", str(folder), "--data", str(manifest), "--real", str(tmp_path / "real.txt"), "--c", "1"])
    stats = FeatureStats.load(folder)
    assert stats.domain.meta["n_synthetic"] == 8 and stats.domain.meta["n_real"] == 8
    with pytest.raises(SystemExit) as exit_info:  # a source that is neither a folder, a manifest nor a list
        main(["domain", "--model", str(folder), "--data", str(manifest), "--real", str(tmp_path / "real.csv")])
    assert exit_info.value.code == 2
