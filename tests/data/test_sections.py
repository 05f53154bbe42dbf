from crrg.text.sections import MAIN_SECTIONS, extract_sections

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___F with new onset ascites  // eval for infection
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  None.
 
 FINDINGS: 
 
 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows.
 
 IMPRESSION: 
 
 No acute cardiopulmonary process.
"""


def test_mimic_template_sections_and_whitespace():
    s = extract_sections(MIMIC_REPORT)
    assert s["indication"] == "___F with new onset ascites // eval for infection"
    assert s["comparison"] == "None."
    assert s["findings"] == ("There is no focal consolidation, pleural effusion or pneumothorax. Bilateral "
                             "nodular opacities that most likely represent nipple shadows.")
    assert s["impression"] == "No acute cardiopulmonary process."
    assert s["technique"] == "Chest PA and lateral"
    assert s["examination"] == "CHEST (PA AND LAT)"


def test_heading_variants_fold_into_canonical_keys():
    text = ("CLINICAL HISTORY: fever.\nREASON FOR EXAM: r/o pneumonia.\nCOMPARISONS: ___.\n"
            "FINDINGS AND IMPRESSION: Clear lungs.\nRECOMMENDATION(S): none")
    s = extract_sections(text)
    assert s["indication"] == "fever. r/o pneumonia."
    assert s["comparison"] == "___."
    assert s["findings"] == "Clear lungs."
    assert s["impression"] == ""
    assert s["recommendation"] == "none"
    assert extract_sections("CONCLUSION: Mild edema.")["impression"] == "Mild edema."


def test_text_without_headings_is_findings_and_keeps_words():
    s = extract_sections("Heart size: normal.\n  XXXX lungs   are clear.")
    assert s == {"indication": "", "comparison": "", "findings": "Heart size: normal. XXXX lungs are clear.", "impression": ""}
    assert set(extract_sections("")) == set(MAIN_SECTIONS)


def test_last_paragraph_fallback_when_no_findings_or_impression():
    text = "FINAL REPORT\n HISTORY: cough.\n \n The lungs are clear. No effusion.\n"
    s = extract_sections(text)
    assert s["indication"] == "cough."
    assert s["findings"] == "The lungs are clear. No effusion."


def test_unknown_uppercase_heading_ends_previous_section():
    s = extract_sections("FINDINGS: Clear.\nADDENDUM: see below.\nNOTE BY DR: called.")
    assert s["findings"] == "Clear."
    assert s["addendum"] == "see below."
    assert s["note_by_dr"] == "called."


def test_known_headings_in_any_case_and_inline():
    s = extract_sections("Indication: cough. Findings: Heart size: normal. No effusion. Impression: Normal chest.")
    assert s["indication"] == "cough."
    assert s["findings"] == "Heart size: normal. No effusion."
    assert s["impression"] == "Normal chest."
    # an upper-case word inside a sentence followed by a colon is not a heading
    assert extract_sections("FINDINGS: The tip of the line ETT: 3 cm above carina.")["findings"] == \
        "The tip of the line ETT: 3 cm above carina."


def test_round_trip_on_the_real_iu_xray_reports(shared_data):
    """Every IU X-Ray section, written back under its heading, comes out of extract_sections unchanged."""
    from crrg.data.iu_xray import IuXrayReader

    records = list(IuXrayReader(shared_data / "iu_xray_reports" / "NLMCXR_reports.tgz"))
    assert len(records) == 3955
    for record in records:
        sections = {key: " ".join(getattr(record, key).split()) for key in MAIN_SECTIONS}
        text = "\n \n".join(f" {key.upper()}: {value}" for key, value in sections.items() if value)
        assert {k: v for k, v in extract_sections(text).items() if k in MAIN_SECTIONS} == sections, record.id


def test_upper_case_headings_on_one_line_split_findings_and_impression():
    # Issue 23 item 15: a one-line "FINDINGS: ... IMPRESSION: ..." left the impression empty.
    s = extract_sections("FINDINGS: The lungs are clear. Heart size: normal. IMPRESSION: No acute disease.")
    assert s["findings"] == "The lungs are clear. Heart size: normal."
    assert s["impression"] == "No acute disease."
    # Only the findings / impression split: other upper-case words before a colon stay in the text.
    s = extract_sections("FINDINGS: Tube in place. NOTE: see prior. COMPARISON: none. IMPRESSION: Normal.")
    assert s["findings"] == "Tube in place. NOTE: see prior. COMPARISON: none." and s["impression"] == "Normal."
    # A section with its own line-start heading keeps a quoted inline heading in its text.
    s = extract_sections("FINDINGS: Clear.\nIMPRESSION: Normal. IMPRESSION: Normal.")
    assert s["impression"] == "Normal. IMPRESSION: Normal."
