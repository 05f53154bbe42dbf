"""Fine-tuning a classifier's tower: it learns, it keeps the epoch the selection prefers, AdaBN reads no labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crrg.clip.probe_finetune import FinetuneConfig, TrainSet, adapt_batchnorm, finetune
from crrg.errors import ConfigError

pytest.importorskip("timm")
LABELS = ["Cardiomegaly", "Pleural Effusion"]


def _model():
    from crrg.models.registry import build_model

    torch.manual_seed(0)
    return build_model({"family": "classifier", "labels": LABELS, "dropout": 0.0,
                        "image_encoder": {"name": "efficientnet_lite0", "weights": None, "image_size": 32, "options": {"blocks": 2}}})


def _films(n: int, seed: int, brightness: float = 0.0):
    """Films whose first label is a bright left half (learnable), the second label unknown (masked)."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for k in range(n):
        image = rng.random((40, 40)).astype(np.float32) * 0.3 + brightness
        positive = k % 2
        if positive:
            image[:, :20] += 0.6
        images.append(np.clip(image, 0, 1))
        targets.append([positive, 0])
    targets = np.asarray(targets, np.float32)
    mask = np.asarray([[1.0, 0.0]] * n, np.float32)
    return images, targets, mask


def _auc(model, images, targets) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(targets[:, 0], model.probabilities(images)[:, 0]))


def test_finetune_learns_and_keeps_the_selected_epoch():
    images, targets, mask = _films(24, 0)
    held, held_targets, _ = _films(12, 1)
    calls = []

    def select(model) -> float:
        calls.append(1)
        return _auc(model, held, held_targets) - 0.001 * len(calls)  # ties go to the earliest epoch

    cfg = FinetuneConfig(epochs=3, batch_size=8, lr=3e-3, adabn=False)
    result = finetune(_model(), [TrainSet(images, targets, mask, match_size=20)], cfg, select)
    assert len(result.history) == 3 and not result.adabn
    best = max(result.history, key=lambda r: r["select"])
    assert result.epoch == best["epoch"]
    assert _auc(result.model, held, held_targets) > 0.9
    assert np.isfinite(result.history[-1]["loss"])


def test_adabn_uses_the_unlabelled_films_statistics_and_leaves_the_model_alone():
    model = _model().eval()
    bright, _, _ = _films(16, 2, brightness=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = adapt_batchnorm(model, bright)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the original is not modified
    stem_bn = adapted.image_encoder.body.bn1
    assert not torch.allclose(stem_bn.running_mean, model.image_encoder.body.bn1.running_mean)
    assert not adapted.training
    # With adapted statistics the stem's normalised output on those films is centred.
    with torch.no_grad():
        x = adapted.preprocess(bright)
        out = stem_bn(adapted.image_encoder.body.conv_stem(x))
    assert float(out.mean(dim=(0, 2, 3)).abs().max()) < 0.6


def test_finetune_config_rejects_bad_values():
    with pytest.raises(ConfigError):
        FinetuneConfig.from_dict({"epochs": 0})
    with pytest.raises(ConfigError):
        FinetuneConfig.from_dict({"learning_rate": 1e-3})
