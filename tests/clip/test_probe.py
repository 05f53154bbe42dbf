"""Frozen-tower probes: the saved classifier computes exactly what the heads computed on features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crrg.clip.probe import (
    LinearHeads,
    Standardiser,
    build_probe_classifier,
    extract_features,
    fit_heads,
    group_folds,
    out_of_fold_scores,
)

pytest.importorskip("timm")
TOWER = {"name": "efficientnet_lite0", "weights": None, "image_size": 32, "options": {"blocks": 2}}


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("films")
    rng = np.random.default_rng(0)
    paths = []
    for k in range(12):
        array = (rng.random((40, 36)) * 255).astype(np.uint8)
        array[:, : 4 + k] = 255  # a "finding" whose size varies
        path = folder / f"{k}.png"
        Image.fromarray(array).save(path)
        paths.append(str(path))
    return paths


def test_saved_probe_classifier_reproduces_the_heads(films, tmp_path):
    from crrg.clip.data import load_image
    from crrg.clip.image_encoders import build_image_encoder
    from crrg.models.registry import load_pretrained, save_pretrained

    torch.manual_seed(0)
    tower = build_image_encoder(TOWER).eval()
    features = extract_features(tower, films, 32, batch_size=5)
    assert features.shape == (12, tower.feature_dim)
    labels = ["Cardiomegaly", "Pleural Effusion"]
    targets = np.array([[k > 5, k % 2] for k in range(12)], np.float32)
    std = Standardiser.fit(features)
    heads = fit_heads(std(features), targets, np.ones_like(targets), c=1.0)
    model = build_probe_classifier(TOWER, tower.state_dict(), labels, heads, std, {"Cardiomegaly": 0.3})
    images = [load_image(p) for p in films]
    expected = heads.scores(std(features))
    assert np.allclose(model.probabilities(images), expected, atol=1e-4)
    save_pretrained(model, tmp_path / "clf")
    reloaded = load_pretrained(tmp_path / "clf")
    assert reloaded.labels == labels and reloaded.thresholds == {"Cardiomegaly": 0.3, "Pleural Effusion": 0.5}
    assert reloaded.crrg_config["image_encoder"]["weights"] is None
    assert np.allclose(reloaded.probabilities(images), expected, atol=1e-4)


def test_augmented_features_are_seeded(films):
    tower = __import__("crrg.clip.image_encoders", fromlist=["x"]).build_image_encoder(TOWER)

    def augment(image, rng):
        return np.clip(image + rng.normal(0, 0.2, image.shape), 0, 1).astype(np.float32)

    a = extract_features(tower, films[:4], 32, augment=augment, seed=1, batch_size=3)
    assert np.array_equal(a, extract_features(tower, films[:4], 32, augment=augment, seed=1, batch_size=2))
    assert not np.array_equal(a, extract_features(tower, films[:4], 32, augment=augment, seed=2))


def test_heads_on_one_class_labels_and_masks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, np.zeros(40)], 1).astype(np.float32)
    mask = np.ones_like(y)
    mask[:10, 0] = 0
    heads = fit_heads(x, y, mask, c=1.0)
    scores = heads.scores(x)
    assert np.all(np.isclose(scores[:, 1], scores[0, 1]))  # a one-class label cannot rank
    assert scores[x[:, 0] > 1, 0].min() > scores[x[:, 0] < -1, 0].max()


def test_group_folds_keep_patients_together_and_out_of_fold_never_sees_the_row():
    groups = [k // 3 for k in range(30)]
    folds = group_folds(groups, 5, seed=0)
    for g in set(groups):
        assert len({folds[i] for i in range(30) if groups[i] == g}) == 1
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    y = (rng.random((30, 1)) > 0.5).astype(np.float32)  # labels unrelated to x: memorising would score ~1
    scores = out_of_fold_scores(x, y, np.ones_like(y), 100.0, folds)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y[:, 0], scores[:, 0]) < 0.85


def test_standardiser_folded_into_linear_head_is_exact():
    rng = np.random.default_rng(0)
    f = rng.normal(3.0, 2.0, size=(20, 5)).astype(np.float32)
    std = Standardiser.fit(f)
    heads = LinearHeads(rng.normal(size=(2, 5)).astype(np.float32), np.array([0.1, -0.2], np.float32))
    weight = heads.weight / std.std
    bias = heads.bias - (heads.weight * std.mean / std.std).sum(1)
    assert np.allclose(1 / (1 + np.exp(-(f @ weight.T + bias))), heads.scores(std(f)), atol=1e-5)
