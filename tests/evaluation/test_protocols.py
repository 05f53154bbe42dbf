"""--protocol r2gen: R2Gen's cleaning rules, <unk> mapping and truncation, written out as expected strings."""

from __future__ import annotations

import json

import pytest

from crrg.errors import InputError
from crrg.evaluation.protocols import (
    R2GEN_SETTINGS,
    TextProtocol,
    prepare_nlg_inputs,
    r2gen_clean,
    r2gen_vocabulary,
)


@pytest.mark.parametrize("report, expected", [
    # numbering removed ("1. ", ". 2. "), ".." collapsed, ; ( ) ! < > " / removed, "-" and digits kept
    ('1. Heart size normal.. 2. No effusion; lungs (clear)! x-XXXX a/b <5> "q" 3. Done.',
     "heart size normal . no effusion lungs clear x-xxxx ab 5 q . done ."),
    # an empty sentence is kept (R2Gen's filter compares a string with [] and never drops one)
    ("No effusion. . Clear.", "no effusion .  . clear ."),
    # @ = and uppercase letters are in the ':'..'[' range; the text is lower-cased first, so letters stay
    ("Size = 5 cm @ apex.", "size  5 cm  apex ."),
    ("", " ."),
])
def test_iu_xray_cleaning(report, expected):
    assert r2gen_clean(report, "iu_xray") == expected


def test_mimic_cleaning_joins_lines_and_collapses_underscores():
    report = "The heart is normal.\nThere is no ___ effusion.. 2. Clear lungs."
    assert r2gen_clean(report, "mimic_cxr") == "the heart is normal . there is no  effusion . clear lungs ."
    # IU X-Ray's rules keep the newline inside the first sentence
    assert r2gen_clean(report, "iu_xray") == "the heart is normal\nthere is no  effusion . clear lungs ."


def test_unk_and_truncation_to_max_seq_length_minus_one():
    vocab = frozenset({"the", "heart", "is", "normal", "."})
    proto = TextProtocol("r2gen", "iu_xray", vocab)
    assert proto.r2gen_text("The heart is enormous.") == "the heart is <unk> ."
    long = " ".join(["normal"] * 100) + "."
    for dataset in ("iu_xray", "mimic_cxr"):
        words = TextProtocol("r2gen", dataset).r2gen_text(long).split()
        assert len(words) == R2GEN_SETTINGS[dataset].max_seq_length - 1 == {"iu_xray": 59, "mimic_cxr": 99}[dataset]


def test_vocabulary_threshold_counts_cleaned_tokens():
    train = ["Lungs clear.", "Lungs clear.", "Lungs are clear."]
    assert r2gen_vocabulary(train, "iu_xray") == frozenset({"lungs", "clear", "."})  # "are" seen once < 3
    assert r2gen_vocabulary(train, "iu_xray", threshold=1) == frozenset({"lungs", "clear", "are", "."})


def test_r2gen_needs_a_dataset_and_describes_itself():
    with pytest.raises(InputError, match="needs --dataset"):
        TextProtocol("r2gen")
    with pytest.raises(InputError, match="unknown protocol"):
        TextProtocol("bleu")
    d = TextProtocol("r2gen", "mimic_cxr").describe()
    assert (d["name"], d["threshold"], d["max_seq_length"]) == ("r2gen", 10, 100)
    assert "not applied" in d["unk"]
    assert "coco" in TextProtocol().label()


def test_r2gen_inputs_skip_the_ptb_tokenizer_and_keep_full_stops():
    gts, res = prepare_nlg_inputs(TextProtocol("r2gen", "iu_xray"), {"a": "No effusion, no edema."},
                                  {"a": "No effusion. No edema."})
    assert gts == {"a": ["no effusion . no edema ."]}
    assert res == {"a": ["no effusion no edema ."]}


# IU X-Ray reports of the shared R2Gen-format annotation, with R2Gen's cleaned text written out by hand.
IU_EXPECTED = {
    "1447": "the lungs are clear . there is no pleural effusion or pneumothorax . the heart and mediastinum are "
            "normal . the skeletal structures short thready changes of the spine . no acute pulmonary disease .",
    "619": "there has been interval sternotomy with intact midline sternotomy xxxx . the heart is near top normal "
           "in size with unfolding of the aorta . the lungs are grossly clear with no focal airspace opacity pleural "
           "effusion or pneumothorax . the osseous structures are grossly normal . cardiomegaly however no acute "
           "cardiopulmonary findings .",
    "2130": "cardiomegaly is present . there is interstitial pulmonary edema with the presence of xxxx b-lines . "
            "there is no pneumothorax . there is an oval 17 mm nodular opacity projecting between the posterior "
            "left 5th and 6th ribs . there is a 10 mm nodular density projecting over the right posterior 4th rib . "
            "there is a xxxx posterior effusion . normal mediastinal silhouette . t-spine osteophytes . cardiomegaly "
            "with mild interstitial edema and xxxx posterior pleural effusion . 17 mm nodular opacity in the left "
            "lung and 10 mm nodular opacity in the right lung . these lesions are xxxx and could be followed up "
            "radiographically after treatment of edema or could be further characterized with ct .",
}


def test_iu_xray_reports_match_r2gen_rules(shared_data):
    ann = json.loads((shared_data / "iu_xray_reports" / "r2gen_split_annotation.json").read_text())
    reports = {str(x["id"]): x["report"] for x in ann["test"]}
    for key, expected in IU_EXPECTED.items():
        assert r2gen_clean(reports[key], "iu_xray") == expected
    # the full R2Gen text of 2130: cut to 59 words, rare training words as <unk>
    proto = TextProtocol("r2gen", "iu_xray", r2gen_vocabulary([x["report"] for x in ann["train"]], "iu_xray"))
    words = proto.r2gen_text(reports["2130"]).split()
    assert len(words) == 59 and words[:4] == ["cardiomegaly", "is", "present", "."]
    assert words == [w if w in proto.vocabulary else "<unk>" for w in IU_EXPECTED["2130"].split()[:59]]
    assert "<unk>" in words
