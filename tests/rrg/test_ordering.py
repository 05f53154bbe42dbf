import itertools
import random

import pytest

from crrg.errors import InputError
from crrg.rrg.assembly import RegionSentence, assemble_report
from crrg.rrg.ordering import ORDER_FILE, SentenceOrder, _kemeny, sentence_kind

# a house style: what is wrong first, then the stock negatives, the heart last in 3 reports of 5
HEART_LAST = "Small right pleural effusion. No pneumothorax. The lungs are clear. No acute osseous abnormality. Normal heart size."
HEART_FIRST = "Normal heart size. Small right pleural effusion. No pneumothorax. The lungs are clear. No acute osseous abnormality."


def test_kind_is_what_the_labeler_reads_or_else_the_text():
    assert sentence_kind("No pneumothorax.") == sentence_kind("There is no pneumothorax") == "Pneumothorax=0"
    assert sentence_kind("Small right pleural effusion.") == "Pleural Effusion=1"
    assert sentence_kind("The lungs are clear.") == "text:the lungs are clear"


def test_learned_order_follows_the_majority_of_pairwise_precedences_not_mean_positions():
    order = SentenceOrder.fit([HEART_LAST] * 3 + [HEART_FIRST] * 2, min_count=1)
    assert order.p_before("Pleural Effusion=1", "Pneumothorax=0") > 0.9
    # anatomical input order: heart, lungs, pleura, bones
    given = [RegionSentence("cardiac silhouette", "The heart is normal in size."),
             RegionSentence("right lung", "The lungs are clear."),
             RegionSentence("right costophrenic angle", "There is a small right pleural effusion."),
             RegionSentence("right apical zone", "No evidence of pneumothorax."),
             RegionSentence("spine", "No acute osseous abnormality.")]
    texts = [s.text for s in order.arrange(given)]
    assert texts == ["There is a small right pleural effusion.", "No evidence of pneumothorax.", "The lungs are clear.",
                     "No acute osseous abnormality.", "The heart is normal in size."]
    # a kind the table never saw keeps its anatomical place among the others' order
    unknown = [RegionSentence("trachea", "The trachea is midline.")] + given[2:4]
    assert [s.text for s in order.arrange(unknown)][0] == "The trachea is midline."


def test_exact_order_beats_every_other_permutation():
    rng = random.Random(0)
    for n in (3, 5, 6):
        w = [[rng.random() for _ in range(n)] for _ in range(n)]
        value = lambda p: sum(w[p[a]][p[b]] for a in range(n) for b in range(a + 1, n))
        assert value(_kemeny(w)) == pytest.approx(max(value(p) for p in itertools.permutations(range(n))))


def test_long_reports_fall_back_to_a_greedy_order():
    order = SentenceOrder.fit([HEART_LAST] * 3, min_count=1)
    many = [RegionSentence("x", f"Finding number {i}.") for i in range(12)] + [
        RegionSentence("cardiac silhouette", "Normal heart size."), RegionSentence("spine", "No acute osseous abnormality.")]
    out = order.arrange(many)
    assert sorted(s.text for s in out) == sorted(s.text for s in many)
    assert [s.text for s in out].index("No acute osseous abnormality.") < [s.text for s in out].index("Normal heart size.")


def test_assembly_orders_after_dropping_repeats_and_the_table_round_trips(tmp_path):
    order = SentenceOrder.fit([HEART_LAST] * 4, min_count=1)
    parts = [RegionSentence("right lung", "The lungs are clear."),
             RegionSentence("right costophrenic angle", "Small right pleural effusion.", abnormal=True),
             RegionSentence("right hemidiaphragm", "small right pleural effusion", abnormal=True)]
    out = assemble_report(parts, order=order)
    assert out.findings == "Small right pleural effusion. The lungs are clear."
    assert assemble_report(parts).findings == "The lungs are clear. Small right pleural effusion."
    order.save(tmp_path)
    assert SentenceOrder.load(tmp_path).before == order.before
    assert SentenceOrder.load(tmp_path / "nowhere") is None
    (tmp_path / ORDER_FILE).write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        SentenceOrder.load(tmp_path)
    with pytest.raises(InputError, match="malformed"):
        SentenceOrder.from_dict({"before": [["a"]]})
