from crrg.text import clean_report
from crrg.text.clean import remove_deid_tokens


def test_xray_deid_is_restored():
    assert clean_report("Normal chest x-XXXX.") == "Normal chest x-ray."


def test_deid_runs_removed_with_dangling_words():
    assert clean_report("Dr. XXXX XXXX was notified on XXXX at XXXX.") == "Was notified."
    assert clean_report("Comparison XXXX, XXXX.") == "Comparison."
    assert "XXXX" not in clean_report("There are no XXXX of a pleural effusion. The XXXX are intact.")
    assert clean_report("Costophrenic XXXX blunting.") == "Costophrenic blunting."


def test_deid_replacement_token():
    assert remove_deid_tokens("Seen by Dr. XXXX XXXX today", replacement="<unk>") == "Seen by Dr. <unk> today"
    assert clean_report("Pulmonary XXXX are normal.", deid_replacement="<unk>") == "Pulmonary <unk> are normal."


def test_numbering_whitespace_and_punctuation():
    assert clean_report("1. No acute disease.\n2. Stable cardiomegaly.  ") == "No acute disease. Stable cardiomegaly."
    assert clean_report("Findings: 1) Heart normal. 2) Lungs clear") == "Findings: Heart normal. Lungs clear"
    assert clean_report("No effusion..  Lungs   clear ,  heart normal ;;") == "No effusion. Lungs clear, heart normal;"
    assert clean_report("Nodule measures 2.5 cm. T12 is intact.") == "Nodule measures 2.5 cm. T12 is intact."


def test_keep_newlines_and_empty():
    assert clean_report("Heart normal.\n\n  Lungs clear.", keep_newlines=True) == "Heart normal.\nLungs clear."
    assert clean_report("") == "" and clean_report(None) == ""
