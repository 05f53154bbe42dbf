"""Paired bootstrap: intervals of known cases, and resampled corpus metrics identical to pycocoevalcap's."""

from __future__ import annotations

import numpy as np
import pytest

from crrg.evaluation.blocks import NlgBlock, PerSampleBlock, score_all
from crrg.evaluation.bootstrap import draws, paired_bootstrap

TEXTS = [
    "the heart is normal in size", "no pleural effusion or pneumothorax", "mild cardiomegaly",
    "the lungs are clear", "small left pleural effusion", "no acute cardiopulmonary abnormality",
    "there is mild pulmonary edema", "right lower lobe opacity may represent pneumonia",
]


def test_draws_are_seeded_and_in_range():
    a, b = draws(10, 5, seed=3), draws(10, 5, seed=3)
    assert a.shape == (5, 10) and np.array_equal(a, b) and a.min() >= 0 and a.max() < 10
    assert not np.array_equal(a, draws(10, 5, seed=4))


def test_paired_difference_of_a_constant_shift_is_exact():
    rng = np.random.default_rng(1)
    base = rng.random(30)
    systems = {"A": [PerSampleBlock({"m": base})], "B": [PerSampleBlock({"m": base + 0.1})]}
    full = {k: score_all(v, np.arange(30)) for k, v in systems.items()}
    boot = paired_bootstrap(systems, 30, full, resamples=200, seed=0)
    d = boot["differences"]["B - A"]["m"]
    # paired: every resample has the same studies on both sides, so the difference never moves
    assert d["difference"] == pytest.approx(0.1)
    assert d["interval"] == pytest.approx([0.1, 0.1])
    assert d["share_positive"] == 1.0
    low, high = boot["systems"]["A"]["m"]
    assert low < full["A"]["m"] < high and high - low < 0.5
    # identical systems: a zero-width interval at 0
    same = paired_bootstrap({"A": systems["A"], "A2": systems["A"]}, 30, {"A": full["A"], "A2": full["A"]},
                            resamples=50)
    assert same["differences"]["A2 - A"]["m"]["interval"] == [0.0, 0.0]


def test_inverse_aggregate_is_recomputed_per_resample():
    block = PerSampleBlock({"r": np.array([1.0, 3.0])}, {"r_inv": ("r", lambda v: 1 / v.mean())})
    assert block.score(np.array([0, 1]))["r_inv"] == pytest.approx(0.5)
    assert block.score(np.array([1, 1]))["r_inv"] == pytest.approx(1 / 3)


def _corpus(idx, gts, res):
    return {str(j): gts[i] for j, i in enumerate(idx)}, {str(j): res[i] for j, i in enumerate(idx)}


def test_cider_resampler_equals_pycocoevalcap_on_a_corpus_with_repeats():
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    from crrg.evaluation.cider_resample import CiderResampler

    gts = [[t] for t in TEXTS]
    res = [[TEXTS[(i + 1) % len(TEXTS)] if i % 3 else TEXTS[i]] for i in range(len(TEXTS))]
    cooked = CiderScorer(n=4, sigma=6.0)
    for g, r in zip(gts, res):
        cooked += (r[0], g)
    fast = CiderResampler(cooked.ctest, cooked.crefs)
    for idx in (np.arange(len(TEXTS)), np.array([0, 0, 3, 5, 5, 5, 7, 2]), np.array([1, 4, 4])):
        expected = Cider().compute_score(*_corpus(idx, gts, res))[0]
        assert fast.score(idx) == pytest.approx(expected, abs=1e-10)


def test_nlg_block_resample_equals_pycocoevalcap(nlg_scorer):
    gts = [[t] for t in TEXTS]
    res = [[TEXTS[(i + 2) % len(TEXTS)] if i % 2 else TEXTS[i] + " today"] for i in range(len(TEXTS))]
    block = NlgBlock(gts, res, nlg_scorer)
    full = block.score(np.arange(len(TEXTS)))
    assert full == nlg_scorer.score_tokenized(*_corpus(np.arange(len(TEXTS)), gts, res))
    idx = np.array([0, 0, 1, 4, 4, 6, 7, 7])
    fast = block.score(idx)
    slow = nlg_scorer.score_tokenized(*_corpus(idx, gts, res))
    assert set(fast) == set(slow) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"}
    for key in slow:
        assert fast[key] == pytest.approx(slow[key], abs=1e-10), key
