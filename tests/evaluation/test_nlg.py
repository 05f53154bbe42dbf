"""NLG metrics equal pycocoevalcap's own numbers, and awkward text cannot break the Java protocol."""

from __future__ import annotations

import pytest

from crrg.errors import InputError
from crrg.evaluation.nlg import NLG_KEYS, check_same_ids, sanitize_for_java


def direct_pycocoevalcap(preds, refs, meteor):
    """pycocoevalcap used as its README shows, with no crrg code in between."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": r} for r in (v if isinstance(v, list) else [v])] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in preds.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {
        "bleu_1": bleu[0], "bleu_2": bleu[1], "bleu_3": bleu[2], "bleu_4": bleu[3],
        "meteor": meteor.compute_score(gts, res)[0],
        "rouge_l": Rouge().compute_score(gts, res)[0],
        "cider": Cider().compute_score(gts, res)[0],
    }


def test_equals_pycocoevalcap_on_iu_xray(iu_pairs, nlg_scorer):
    preds, refs, _ = iu_pairs
    ours = nlg_scorer.score(preds, refs)
    theirs = direct_pycocoevalcap(preds, refs, nlg_scorer.meteor)
    assert set(ours) == set(NLG_KEYS)
    for key in NLG_KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key
    # Shuffled reports of the same collection: plausible but far from perfect.
    assert 0.1 < ours["bleu_1"] < 0.6 and 0 < ours["meteor"] < 0.3 and 0 < ours["cider"] < 1


def test_multiple_references_equal_pycocoevalcap(iu_pairs, nlg_scorer):
    preds, refs, ann = iu_pairs
    ids = sorted(refs)[:60]
    extra = [x["report"] for x in ann["val"][:60]]
    multi = {k: [refs[k], e] for k, e in zip(ids, extra)}
    sub = {k: preds[k] for k in ids}
    ours = nlg_scorer.score(sub, multi)
    theirs = direct_pycocoevalcap(sub, multi, nlg_scorer.meteor)
    for key in NLG_KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key


def test_identical_reports_score_perfectly(nlg_scorer):
    refs = {"a": "The heart is normal in size. No pleural effusion.", "b": "Small right pneumothorax is seen now."}
    m = nlg_scorer.score(dict(refs), refs)
    assert m["bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert m["meteor"] == pytest.approx(1.0) and m["rouge_l"] == pytest.approx(1.0)


def test_awkward_text_scores_like_its_clean_version(nlg_scorer):
    refs = {
        "1": "heart size normal.\r\nno effusion.",
        "2": "lungs\tare clear ||| no pneumothorax",
        "3": "mild cardiomegaly\u2028with edema",
        "4": "small\x0ceffusion\x0bleft",
        "5": "no acute disease \U0001F600 seen",
        "6": "café naïve \u00b5 normal heart",
        "7": "normal chest",
    }
    preds = {
        "1": "heart size is normal.\rno effusion\u2029seen.",
        "2": "",
        "3": "cardiomegaly\x85and mild edema",
        "4": "left effusion\u00a0small",
        "5": "\U0001F600",
        "6": "cafe\u0301 naive heart",  # decomposed é: NFC makes it match the reference's é
        "7": "",
    }
    clean = {k: " ".join(v.replace("\U0001F600", " ").replace("|||", "| | |").split()) for k, v in refs.items()}
    clean_preds = {k: " ".join(v.replace("\U0001F600", " ").split()) for k, v in preds.items()}
    clean_preds["6"] = "café naive heart"
    awkward = nlg_scorer.score(preds, refs)
    expected = nlg_scorer.score(clean_preds, clean)
    for key in NLG_KEYS:
        assert awkward[key] == pytest.approx(expected[key], abs=1e-9), key
    assert 0 < awkward["meteor"] < 1


def test_all_empty_predictions_give_zero(nlg_scorer):
    refs = {"a": "no acute cardiopulmonary process", "b": "heart is enlarged"}
    m = nlg_scorer.score({"a": "", "b": ""}, refs)
    assert m["bleu_1"] == pytest.approx(0.0, abs=1e-9) and m["meteor"] == 0.0 and m["rouge_l"] == 0.0


def test_sanitize_leaves_normal_text_alone(iu_pairs):
    _, _, ann = iu_pairs
    texts = [x["report"] for split in ann.values() for x in split]
    assert all(sanitize_for_java(t) == t for t in texts)
    assert sanitize_for_java("a\rb\u2028c\x0cd\te\U0001F600") == "a b c d e "
    assert sanitize_for_java("naïve µ 中文") == "naïve µ 中文"


def test_id_mismatch_is_a_clear_error():
    with pytest.raises(InputError, match=r"1 reference id\(s\) have no prediction \(e\.g\. b\)"):
        check_same_ids({"a": ""}, {"a": "", "b": ""})
    with pytest.raises(InputError, match=r"2 predictions id\(s\) have no reference \(e\.g\. x, y\)"):
        check_same_ids({"a": "", "x": "", "y": ""}, {"a": ""})
    with pytest.raises(InputError, match="no reports"):
        check_same_ids({}, {})


def test_bad_values_are_input_errors(nlg_scorer):
    with pytest.raises(InputError, match="must be a string"):
        nlg_scorer.score({"a": None}, {"a": "x"})
    with pytest.raises(InputError, match="has no text"):
        nlg_scorer.score({"a": "x"}, {"a": []})
