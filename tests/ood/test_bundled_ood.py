"""The OOD statistics shipped with crrg-default (fitted by ``python -m crrg.ood fit``)."""

from pathlib import Path

import numpy as np
import pytest

from crrg.models.registry import bundled_models_dir
from crrg.ood import OOD_FILE, FeatureStats

FOLDER = bundled_models_dir() / "crrg-default"


def test_default_model_ships_small_calibrated_statistics():
    path = FOLDER / OOD_FILE
    assert path.is_file() and path.stat().st_size < 1_000_000
    stats = FeatureStats.load(FOLDER)
    assert np.isfinite(stats.threshold) and stats.meta["percentile"] == 99.0
    assert stats.meta["n_fit"] >= 1000 and stats.meta["n_val"] >= 100
    # held-out training-distribution films score about 1; the threshold sits in their far tail
    assert 0.5 < stats.meta["val_median"] < 2.0 < stats.threshold


@pytest.mark.slow
def test_default_model_calls_noise_and_a_real_film_less_like_its_training_films(shared_data):
    from crrg.image import load_image
    from crrg.models.registry import load_pretrained
    from crrg.ood import OODScorer

    scorer = OODScorer.for_model(load_pretrained("crrg-default"), FOLDER)
    examples = Path(__file__).resolve().parents[2] / "examples"
    synthetic = scorer.assess(load_image(examples / "normal_frontal.png"))
    real = scorer.assess(load_image(shared_data / "real_cxr_samples" / "nih_sample_0.png"))
    noise = scorer.assess(np.random.default_rng(0).random((256, 256)).astype(np.float32))
    assert not synthetic.unreliable and noise.unreliable
    assert synthetic.score < real.score < noise.score


@pytest.mark.slow
def test_every_report_of_the_default_model_carries_its_ood_score_and_an_unlike_film_a_warning():
    from crrg.image import load_image
    from crrg.models.registry import load_pretrained
    from crrg.reporting import StudyInput

    model = load_pretrained("crrg-default")
    examples = Path(__file__).resolve().parents[2] / "examples"
    like = model.generate_report(StudyInput([load_image(examples / "normal_frontal.png")], ["PA"]))
    assert like.ood is not None and not like.ood["unreliable"] and like.warnings == []
    noise = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    unlike = model.generate_report(StudyInput([noise], ["PA"]))
    assert unlike.ood["unreliable"] and unlike.ood["score"] > unlike.ood["threshold"]
    assert any("unreliable" in w for w in unlike.warnings)
    assert unlike.to_dict()["ood"] == unlike.ood


def test_default_model_reads_its_own_kind_of_film_as_synthetic_and_a_real_one_as_real(shared_data):
    from crrg.image import load_image
    from crrg.models.registry import load_pretrained
    from crrg.ood import OODScorer

    stats = FeatureStats.load(FOLDER)
    assert stats.domain is not None and stats.domain.meta["cv_balanced_accuracy"] > 0.98
    scorer = OODScorer.for_model(load_pretrained("crrg-default"), FOLDER)
    examples = Path(__file__).resolve().parents[2] / "examples"
    for name in ("normal", "heart-failure", "pneumothorax", "devices"):
        assert not scorer.assess(load_image(examples / f"{name}_frontal.png")).reads_as_real, name
    for path in sorted((shared_data / "real_cxr_samples").glob("*.png"))[:4]:
        assert scorer.assess(load_image(path)).reads_as_real, path.name
