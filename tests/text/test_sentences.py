import pytest

from crrg.text import split_sentences


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The nodule measures 2.5 cm. No effusion.", ["The nodule measures 2.5 cm.", "No effusion."]),
        ("Discussed with Dr. Smith. Heart normal.", ["Discussed with Dr. Smith.", "Heart normal."]),
        ("Opacities, e.g. in the left base, persist. Lungs clear.", ["Opacities, e.g. in the left base, persist.", "Lungs clear."]),
        ("1. No acute disease. 2. Stable cardiomegaly.", ["No acute disease.", "Stable cardiomegaly."]),
        ("1. No acute disease\n2) Stable cardiomegaly", ["No acute disease", "Stable cardiomegaly"]),
        ("the heart is normal . lungs are clear .", ["the heart is normal .", "lungs are clear ."]),
        ("Compression of T12. No fracture.", ["Compression of T12.", "No fracture."]),
        ("Heart normal!  Lungs clear? Yes", ["Heart normal!", "Lungs clear?", "Yes"]),
        ("No effusion (see prior). Heart normal.", ["No effusion (see prior).", "Heart normal."]),
        ("", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected
