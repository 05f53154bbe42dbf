import pytest

from crrg.blip.prompts import PROMPT_VARIANTS, PromptConfig, build_instruction, labels_to_probabilities
from crrg.errors import ConfigError

PROBS = {"Cardiomegaly": 0.9, "Pleural Effusion": 0.6, "Edema": 0.2, "No Finding": 0.95}


def test_variants_carry_the_prior_knowledge_they_promise():
    none = build_instruction("dyspnea", PROBS, PromptConfig(variant="none"))
    assert none == "Write the findings and impression."
    ind = build_instruction("dyspnea", PROBS, PromptConfig(variant="indication"))
    assert ind == "Indication: dyspnea. Write the findings and impression."
    pred = build_instruction("Dyspnea.", PROBS, PromptConfig(variant="predicted"))
    # most probable first; below-threshold and "No Finding" never listed
    assert pred == "Indication: Dyspnea. Likely findings: cardiomegaly, pleural effusion. Write the findings and impression."


def test_ground_truth_labels_feed_the_same_format():
    labels = {"Cardiomegaly": 1, "Edema": 0, "Atelectasis": -1, "Fracture": None}
    probs = labels_to_probabilities(labels)
    assert probs == {"Cardiomegaly": 1.0, "Edema": 0.0, "Atelectasis": 0.5, "Fracture": 0.0}
    text = build_instruction("", probs, PromptConfig(variant="ground_truth", uncertain_threshold=0.4, threshold=0.75))
    assert text == ("Indication: none given. Likely findings: cardiomegaly. Possible findings: atelectasis. "
                    "Write the findings and impression.")


def test_no_positive_findings_and_deidentified_indication():
    text = build_instruction("XXXX-year-old XXXX with chest pain", {"Edema": 0.1}, PromptConfig(variant="predicted"))
    assert "XXXX" not in text and "Likely findings: none." in text and "chest pain" in text


def test_bad_variant_and_unknown_observation_are_user_errors():
    assert set(PROMPT_VARIANTS) == {"none", "indication", "predicted", "ground_truth"}
    with pytest.raises(ConfigError, match="prompt variant"):
        PromptConfig(variant="everything")
    with pytest.raises(ConfigError, match="unknown observation"):
        build_instruction("x", {"Heart Attack": 0.9}, PromptConfig())
