"""Probe recipes: settings are chosen on NIH train / synthetic val, and real labels really join training."""

from __future__ import annotations

import numpy as np
import pytest

from crrg.clip.data import LabeledImage
from crrg.clip.probe_recipe import Domain, ProbeRecipe, train_probe
from crrg.errors import ConfigError

LABELS = ["No Finding", "Cardiomegaly", "Fracture"]


def _domain(n: int, shift: float, seed: int, masked_fracture: bool = False, groups: bool = False) -> Domain:
    """Features where dimension 0 carries Cardiomegaly (shifted by ``shift``: another domain's offset)."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, 3)) < 0.4
    y[:, 0] = ~y[:, 1]
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[:, 0] += 2.0 * y[:, 1] + shift
    x[:, 1] += 2.0 * y[:, 2]
    mask = np.ones((n, 3), np.float32)
    if masked_fracture:
        mask[:, 2] = 0
    items = [LabeledImage(path=f"{seed}/{i}.png", target=[float(v) for v in y[i]], mask=list(mask[i]), id=str(i)) for i in range(n)]
    return Domain(items, x, [str(i // 4) for i in range(n)] if groups else [])


@pytest.fixture
def domains() -> dict[str, Domain]:
    return {"synth_train": _domain(120, 0.0, 1), "synth_val": _domain(60, 0.0, 2), "synth_test": _domain(40, 0.0, 3),
            "nih_train": _domain(80, 5.0, 4, masked_fracture=True, groups=True)}


def test_synthetic_only_probe_ranks_the_real_domain_after_standardisation(domains):
    recipe = ProbeRecipe(labels=LABELS, c_grid=[0.01, 1.0], standardise=True)
    result = train_probe(recipe, domains)
    nih = domains["nih_train"]
    scores = result.heads.scores(result.real_standardiser(nih.features))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(nih.targets[:, 1], scores[:, 1]) > 0.85
    assert set(result.selection) == {(0.01, 1.0), (1.0, 1.0)}
    assert result.c in (0.01, 1.0)
    assert set(result.thresholds) == set(LABELS)


def test_real_labels_choose_weight_and_c_by_cross_validation(domains):
    recipe = ProbeRecipe(labels=LABELS, c_grid=[0.1, 1.0], real_labels=["nih"], real_weight=[1.0, 5.0])
    result = train_probe(recipe, domains)
    assert set(result.selection) == {(c, w) for c in (0.1, 1.0) for w in (1.0, 5.0)}
    assert (result.c, result.real_weight) == max(result.selection, key=result.selection.get)


def test_selection_on_synthetic_val_uses_no_real_label(domains):
    recipe = ProbeRecipe(labels=LABELS, c_grid=[0.01, 1.0], select_on="synthetic_val")
    before = train_probe(recipe, domains)
    flipped = dict(domains)
    nih = domains["nih_train"]
    items = [LabeledImage(i.path, [1.0 - t for t in i.target], i.mask, i.id) for i in nih.items]
    flipped["nih_train"] = Domain(items, nih.features, nih.groups)  # real labels inverted: nothing may change
    after = train_probe(recipe, flipped)
    assert before.selection == after.selection and before.thresholds == after.thresholds


def test_recipe_validation():
    with pytest.raises(ConfigError, match="real_labels"):
        ProbeRecipe.from_dict({"real_labels": ["mimic"]})
    with pytest.raises(ConfigError, match="select_on"):
        ProbeRecipe.from_dict({"select_on": "nih_valid"})
    with pytest.raises(ConfigError):
        ProbeRecipe.from_dict({"c_gird": [1.0]})


def test_shipped_recipes_parse():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[2] / "configs" / "real").glob("*.yaml")):
        recipe = ProbeRecipe.from_yaml(path)
        assert recipe.tower["weights"] == "imagenet"
