"""The labeler on many phrasings: mentions, negation, uncertainty, double negation, No Finding."""

import pytest

from crrg.labeler import find_mentions, label_report, label_reports
from crrg.observations import CHEXPERT_14


def lab(text, name):
    return label_report(text)[name]


@pytest.mark.parametrize(
    "text, name, expected",
    [
        # positive mentions and synonyms
        ("Cardiomegaly.", "Cardiomegaly", 1),
        ("The heart size is enlarged.", "Cardiomegaly", 1),
        ("Heart is mildly enlarged.", "Cardiomegaly", 1),
        ("Enlarged cardiac silhouette.", "Cardiomegaly", 1),
        ("Small left pleural effusion.", "Pleural Effusion", 1),
        ("Blunting of the left costophrenic angle.", "Pleural Effusion", 1),
        ("The right costophrenic angle is blunted.", "Pleural Effusion", 1),
        ("Small right apical pneumothorax.", "Pneumothorax", 1),
        ("Bibasilar atelectasis.", "Atelectasis", 1),
        ("Atelectatic changes at the left base.", "Atelectasis", 1),
        ("Patchy opacities in the right lower lobe.", "Lung Opacity", 1),
        ("Right lower lobe infiltrate.", "Lung Opacity", 1),
        ("Focal airspace disease in the lingula.", "Lung Opacity", 1),
        ("Right lower lobe consolidation.", "Consolidation", 1),
        ("Findings consistent with pneumonia.", "Pneumonia", 1),
        ("Mild interstitial edema.", "Edema", 1),
        ("Pulmonary vascular congestion.", "Edema", 1),
        ("A 1 cm nodule in the right upper lobe.", "Lung Lesion", 1),
        ("Large mass in the left hilum.", "Lung Lesion", 1),
        ("Healed left rib fractures.", "Fracture", 1),
        ("Left chest wall pacemaker with leads in the right ventricle.", "Support Devices", 1),
        ("Right PICC line tip in the SVC.", "Support Devices", 1),
        ("Endotracheal tube 4 cm above the carina.", "Support Devices", 1),
        ("Median sternotomy wires.", "Support Devices", 1),
        ("Widened mediastinum.", "Enlarged Cardiomediastinum", 1),
        ("Widening of the upper mediastinum.", "Enlarged Cardiomediastinum", 1),  # was "No Finding"
        ("Prominence of the superior mediastinum.", "Enlarged Cardiomediastinum", 1),
        ("Apical pleural thickening on the right.", "Pleural Other", 1),
        # negation
        ("No pleural effusion.", "Pleural Effusion", 0),
        ("No pneumothorax, pleural effusion, or focal consolidation.", "Consolidation", 0),
        ("No focal consolidation, large pleural effusion, or pneumothorax is identified.", "Pneumothorax", 0),
        ("Lungs are clear without infiltrate or effusion.", "Pleural Effusion", 0),
        ("Lungs are free of focal airspace disease.", "Lung Opacity", 0),
        ("Negative for pneumothorax.", "Pneumothorax", 0),
        ("No evidence of pneumonia.", "Pneumonia", 0),
        ("The previously seen effusion has resolved.", "Pleural Effusion", 0),
        ("Resolution of the left lower lobe atelectasis.", "Atelectasis", 0),
        ("Pneumothorax is not seen.", "Pneumothorax", 0),
        ("Normal heart size.", "Cardiomegaly", 0),
        ("The heart is normal in size.", "Cardiomegaly", 0),
        ("Heart size is within normal limits.", "Cardiomegaly", 0),
        ("The heart is not enlarged.", "Cardiomegaly", 0),
        ("Costophrenic angles are sharp.", "Pleural Effusion", 0),
        ("The mediastinum is not widened.", "Enlarged Cardiomediastinum", 0),
        # uncertainty (CheXpert: "likely" is uncertain)
        ("Possible small left effusion.", "Pleural Effusion", -1),
        ("Pneumonia cannot be excluded.", "Pneumonia", -1),
        ("Cannot exclude a small pneumothorax.", "Pneumothorax", -1),
        ("Opacity likely represents atelectasis.", "Atelectasis", -1),
        ("Findings may represent early pneumonia.", "Pneumonia", -1),
        ("Findings suggest mild edema.", "Edema", -1),
        ("Questionable nodule in the right base.", "Lung Lesion", -1),
        ("Atelectasis versus pneumonia.", "Pneumonia", -1),
        ("Heart size is upper limits of normal.", "Cardiomegaly", -1),
        ("Borderline cardiomegaly.", "Cardiomegaly", -1),
        # double negation: the finding is still there
        ("No change in the small effusion.", "Pleural Effusion", 1),
        ("No interval change in cardiomegaly.", "Cardiomegaly", 1),
        ("No significant change in the right lower lobe atelectasis.", "Atelectasis", 1),
        ("Left basilar opacity is not significantly changed.", "Lung Opacity", 1),
        # scope ends at a new statement or a contrast
        ("No pneumothorax, there is a small effusion.", "Pleural Effusion", 1),
        ("No pneumothorax, but a small left effusion is present.", "Pleural Effusion", 1),
        ("No pneumothorax and the heart is enlarged.", "Cardiomegaly", 1),
        # words that look like mentions but are not
        ("Small pericardial effusion.", "Pleural Effusion", None),
        ("Calcified granuloma in the right upper lobe.", "Lung Lesion", None),
        ("Subcutaneous edema of the chest wall.", "Edema", None),
        ("Stable heart size.", "Cardiomegaly", None),
        ("Normal chest x-XXXX.", "Support Devices", None),
    ],
)
def test_phrasing(text, name, expected):
    assert lab(text, name) == expected, (text, find_mentions(text))


def test_output_covers_the_14_in_order():
    labels = label_report("Heart normal.")
    assert list(labels) == list(CHEXPERT_14)
    assert all(v in (1, 0, -1, None) for v in labels.values())


def test_aggregation_positive_beats_uncertain_beats_negative():
    assert lab("No effusion on the right. Possible small left effusion.", "Pleural Effusion") == -1
    assert lab("Possible right effusion. Small left effusion.", "Pleural Effusion") == 1
    assert lab("No pneumothorax. Left pneumothorax is not seen.", "Pneumothorax") == 0


class TestNoFinding:
    def test_normal_report(self):
        labels = label_report("The heart is normal in size. The lungs are clear. No effusion or pneumothorax.")
        assert labels["No Finding"] == 1

    def test_never_zero(self):
        assert lab("Cardiomegaly.", "No Finding") is None

    def test_uncertain_pathology_blocks_it(self):
        assert lab("Possible small effusion.", "No Finding") is None

    def test_support_devices_do_not_count(self):
        labels = label_report("Pacemaker in place. Lungs are clear. No acute disease.")
        assert labels["Support Devices"] == 1 and labels["No Finding"] == 1

    def test_other_abnormal_findings_block_it_like_chexpert(self):
        labels = label_report("Calcified granuloma. Degenerative changes of the thoracic spine. Lungs clear.")
        assert labels["No Finding"] is None
        assert all(labels[n] is None for n in CHEXPERT_14 if n != "No Finding")

    def test_negated_other_finding_does_not(self):
        assert lab("No emphysema. Lungs are clear.", "No Finding") == 1


def test_empty_and_batch():
    assert all(v is None for v in label_report("  ").values())  # an empty report says nothing
    assert label_report(None)["Cardiomegaly"] is None
    out = label_reports(["Cardiomegaly.", "No effusion."])
    assert out[0]["Cardiomegaly"] == 1 and out[1]["Pleural Effusion"] == 0


def test_case_and_deid_insensitive():
    assert label_report("SMALL LEFT PLEURAL EFFUSION.") == label_report("small left pleural effusion.")
    assert lab("There are no XXXX of a pleural effusion.", "Pleural Effusion") == 0
