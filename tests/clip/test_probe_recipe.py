"""Probe recipes: settings are chosen on NIH train / synthetic val, and real labels really join training."""

from __future__ import annotations

import numpy as np
import pytest

from crrg.clip.data import LabeledImage
from crrg.clip.probe_recipe import Domain, ProbeRecipe, train_fused, train_probe
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


def _nih_with_own_signal(n: int = 100, seed: int = 5) -> Domain:
    """NIH films where Cardiomegaly sits in dimension 2 (which the synthetic films never use) and the
    synthetic cue (dimension 0) is noise: only NIH-trained heads can rank them."""
    d = _domain(n, 5.0, seed, masked_fracture=True, groups=True)
    rng = np.random.default_rng(seed)
    d.features[:, 0] = rng.normal(size=n) + 5.0
    d.features[:, 2] += 3.0 * d.targets[:, 1]
    return d


def test_fused_heads_pick_the_nih_heads_where_cross_validation_says_so(domains):
    from sklearn.metrics import roc_auc_score

    domains["nih_train"] = _nih_with_own_signal()
    recipe = ProbeRecipe(labels=LABELS, c_grid=[0.1, 1.0], real_labels=["nih"], fusion="per_label")
    fused = train_fused(recipe, domains)
    synth_only = train_probe(ProbeRecipe(labels=LABELS, c_grid=[0.1, 1.0]), domains)
    test = _nih_with_own_signal(200, 9)
    x = fused.real_standardiser(test.features)
    assert roc_auc_score(test.targets[:, 1], fused.heads.scores(x)[:, 1]) > 0.9
    assert roc_auc_score(test.targets[:, 1], synth_only.heads.scores(synth_only.real_standardiser(test.features))[:, 1]) < 0.7
    # Fracture: NIH never labels it, so its head is the synthetic one, unchanged
    assert np.allclose(fused.heads.weight[2], synth_only.heads.weight[2])
    assert set(fused.thresholds) == set(LABELS)


def test_fusion_with_alpha_zero_keeps_the_synthetic_ranking(domains):
    domains["nih_train"] = _nih_with_own_signal()
    recipe = ProbeRecipe(labels=LABELS, c_grid=[0.1], real_labels=["nih"], fusion="global", fusion_alphas=[0.0])
    fused = train_fused(recipe, domains)
    synth_only = train_probe(ProbeRecipe(labels=LABELS, c_grid=[0.1]), domains)
    x = fused.real_standardiser(domains["nih_train"].features)
    a, b = fused.heads.scores(x)[:, 1], synth_only.heads.scores(x)[:, 1]
    assert np.array_equal(np.argsort(a, kind="stable"), np.argsort(b, kind="stable"))  # Platt scaling never turns a ranking over


def test_recipe_validation():
    with pytest.raises(ConfigError, match="fusion"):
        ProbeRecipe.from_dict({"fusion": "stack"})
    with pytest.raises(ConfigError, match="real_labels"):
        ProbeRecipe.from_dict({"fusion": "global", "real_labels": []})
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
