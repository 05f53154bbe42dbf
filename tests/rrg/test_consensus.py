import pytest

from crrg.rrg.consensus import consensus, ngram_agreement, words


def test_agreement_is_one_for_equal_texts_zero_for_disjoint_and_symmetric():
    assert ngram_agreement("No pleural effusion.", "no pleural effusion .") == pytest.approx(1.0)
    assert ngram_agreement("Heart normal.", "Lungs clear") == 0.0
    a, b = "There is no pleural effusion or pneumothorax.", "No pneumothorax or pleural effusion."
    assert ngram_agreement(a, b) == pytest.approx(ngram_agreement(b, a))
    assert 0 < ngram_agreement(a, b) < 1
    assert words("Tube 3.2 cm above the carina.") == ["tube", "3.2", "cm", "above", "the", "carina", "."]


def test_consensus_picks_the_wording_closest_to_the_others():
    candidates = ["the cardiomediastinal silhouette is within normal limits.",
                  "normal cardiomediastinal silhouette.",
                  "the cardiomediastinal silhouette is normal.",
                  "the heart is moderately enlarged and the mediastinum is widened."]
    assert consensus(candidates) == "the cardiomediastinal silhouette is normal."
    # weights count: a text said often enough wins over the best-connected one
    assert consensus(candidates, [1, 1, 1, 10]) == candidates[3]
    assert consensus(["a b c", "a b c", "x y z"]) == "a b c"
    assert consensus(["only one"]) == "only one"
    with pytest.raises(ValueError):
        consensus([])
    with pytest.raises(ValueError):
        consensus(["a", "b"], [1.0])
