"""OOD score against the model's own training films (issue 20, item 5b)."""

import base64
import json

import numpy as np
import pytest
import torch

from crrg.errors import ConfigError
from crrg.ood import OOD_FILE, FeatureStats, OODScorer
from crrg.reporting import GeneratedReport


def low_rank(n: int, rank: int = 4, d: int = 24, seed: int = 0) -> np.ndarray:
    basis = np.linalg.qr(np.random.default_rng(99).normal(size=(d, rank)))[0]  # one subspace for every sample
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, rank)) * [5, 4, 3, 2][:rank]) @ basis.T + 0.1 * rng.normal(size=(n, d))


def test_in_distribution_scores_about_one_and_unlike_films_far_above_the_threshold():
    stats = FeatureStats.fit(low_rank(600), k=4)
    threshold = stats.calibrate(low_rank(300, seed=1), percentile=99.0)
    held_out = stats.score(low_rank(300, seed=2))
    assert 0.7 < np.median(held_out) < 1.3
    assert np.mean(held_out > threshold) < 0.05
    # off the training subspace (what a real film is to a synthetic-trained tower): far above
    far = low_rank(50, seed=3) + np.random.default_rng(4).normal(size=(50, 24))
    assert np.all(stats.score(far) > threshold)


def test_held_out_likelihood_finds_the_rank_of_the_data():
    k, scores = FeatureStats.choose_k(low_rank(500), candidates=(1, 2, 4, 8, 16))
    assert k == 4 and scores[4] > scores[2] > scores[1]


def test_statistics_survive_saving_and_a_folder_without_them_has_none(tmp_path):
    stats = FeatureStats.fit(low_rank(200), k=4, meta={"data": "x"})
    stats.calibrate(low_rank(100, seed=1))
    stats.save(tmp_path)
    again = FeatureStats.load(tmp_path)
    x = low_rank(10, seed=5)
    np.testing.assert_allclose(again.score(x), stats.score(x), rtol=1e-5)
    assert again.threshold == pytest.approx(stats.threshold) and again.meta["data"] == "x"
    assert FeatureStats.load(tmp_path / "elsewhere") is None
    from safetensors.torch import save_file

    (tmp_path / "other").mkdir()
    save_file({"mean": torch.zeros(3)}, str(tmp_path / "other" / OOD_FILE))  # not a crrg OOD file
    with pytest.raises(ConfigError, match="refit"):
        FeatureStats.load(tmp_path / "other")


class TinyClassifier(torch.nn.Module):
    """Stands in for the attached CLIP classifier: a tower whose feature is the image's mean and spread."""

    def __init__(self):
        super().__init__()
        self.image_encoder = torch.nn.Identity()

    def preprocess(self, images):
        return torch.tensor(np.array([[im.mean(), im.std()] for im in images]), dtype=torch.float32)


def test_scorer_flags_an_unlike_film_with_a_warning():
    rng = np.random.default_rng(0)
    films = [np.clip(rng.normal(0.5, 0.02, (8, 8)) + rng.normal(0, 0.05), 0, 1) for _ in range(300)]
    clf = TinyClassifier()
    feats = np.array([[f.mean(), f.std()] for f in films])
    stats = FeatureStats.fit(feats[:200], k=1)
    stats.calibrate(feats[200:])
    scorer = OODScorer(stats, clf)
    like, unlike = scorer.assess(films[0]), scorer.assess(np.zeros((8, 8), np.float32))
    assert not like.unreliable and like.warning is None
    assert unlike.unreliable and unlike.score > unlike.threshold and "unreliable" in unlike.warning


def test_fhir_carries_the_ood_score_and_an_unreliable_report_says_so():
    from crrg.serve.fhir import diagnostic_report

    report = GeneratedReport(findings="The lungs are clear.", impression="No acute process.",
                             ood={"score": 9.5, "threshold": 5.0, "unreliable": True, "percentile": 99.0},
                             warnings=["This film is unlike the training films: the report is unreliable."])
    resource = diagnostic_report(report, "0.7.0")
    ext = {e["url"].rsplit("/", 1)[1]: e for e in resource["extension"]}
    assert ext["ood-score"]["valueDecimal"] == 9.5 and ext["ood-unreliable"]["valueBoolean"] is True
    text = base64.b64decode(resource["presentedForm"][0]["data"]).decode()
    assert text.startswith("WARNING: This film is unlike")
    assert "extension" not in diagnostic_report(GeneratedReport("a", "b"), "0.7.0")
    assert "finding-source" not in ext
    routed = GeneratedReport("a", "b", ood={**report.ood, "finding_source": "real"})
    ext = {e["url"].rsplit("/", 1)[1]: e for e in diagnostic_report(routed, "0.8.0")["extension"]}
    assert ext["finding-source"]["valueString"] == "real"
    assert json.loads(json.dumps(report.to_dict()))["ood"]["unreliable"] is True


def test_the_text_report_opens_with_the_warning():
    from crrg.cli.report import format_text

    report = GeneratedReport("The lungs are clear.", "Normal.", warnings=["The report is unreliable."])
    assert format_text(report).splitlines()[0] == "WARNING: The report is unreliable."
    assert format_text(GeneratedReport("a", "b")).startswith("FINDINGS: a")
