"""NIH ChestX-ray14 and COVID-19 findings mapped to CheXpert names (the mapping the model card states)."""

from __future__ import annotations

import pytest

from crrg.clip.real_labels import (
    NIH_OBSERVATIONS,
    covid_to_chexpert,
    nih_to_chexpert,
    read_covid,
    read_nih14,
)
from crrg.errors import InputError
from crrg.observations import CHEXPERT_14


def test_nih_labels_map_to_chexpert_names():
    out = nih_to_chexpert("Effusion|Mass|Infiltration")
    assert out["Pleural Effusion"] == out["Lung Lesion"] == out["Lung Opacity"] == 1
    assert out["No Finding"] == 0 and out["Cardiomegaly"] == 0
    assert nih_to_chexpert("Nodule")["Lung Lesion"] == 1
    assert nih_to_chexpert("Pleural_Thickening")["Pleural Other"] == 1
    for name in ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pneumonia", "Pneumothorax"):
        assert nih_to_chexpert(name)[name] == 1


def test_nih_no_finding_and_unmapped_findings():
    normal = nih_to_chexpert("No Finding")
    assert normal["No Finding"] == 1 and sum(normal.values()) == 1
    emphysema = nih_to_chexpert("Emphysema")  # abnormal, but no CheXpert observation of its own
    assert sum(emphysema.values()) == 0
    assert set(normal) == set(NIH_OBSERVATIONS)
    assert not {"Fracture", "Support Devices", "Enlarged Cardiomediastinum"} & set(NIH_OBSERVATIONS)
    with pytest.raises(InputError, match="unknown NIH label"):
        nih_to_chexpert("Effusion|Broken Leg")


def test_covid_findings():
    assert covid_to_chexpert("COVID-19") == {"No Finding": 0, "Lung Opacity": 1, "Pneumonia": 1}
    assert covid_to_chexpert("Pneumonia/Viral/SARS")["Pneumonia"] == 1
    assert covid_to_chexpert("No Finding") == {"No Finding": 1, "Lung Opacity": 0, "Pneumonia": 0}
    assert covid_to_chexpert("todo") is None


def test_unknown_observations_are_masked_not_negative(tmp_path):
    (tmp_path / "train" / "1_abnormal").mkdir(parents=True)
    (tmp_path / "labels14.csv").write_text("path,finding_labels,patient_id\ntrain/1_abnormal/a.png,Effusion,7\n")
    (item,) = read_nih14(tmp_path, CHEXPERT_14, split="train")
    values = dict(zip(CHEXPERT_14, zip(item.target, item.mask)))
    assert values["Pleural Effusion"] == (1.0, 1.0) and values["Cardiomegaly"] == (0.0, 1.0)
    assert values["Fracture"] == (0.0, 0.0) and values["Support Devices"] == (0.0, 0.0)
    with pytest.raises(InputError, match="no NIH images"):
        read_nih14(tmp_path, CHEXPERT_14, split="valid")


def test_shared_nih_and_covid_sets(shared_data):
    train = read_nih14(shared_data / "nih1000_64px", CHEXPERT_14, split="train")
    valid = read_nih14(shared_data / "nih1000_64px", CHEXPERT_14, split="valid")
    assert (len(train), len(valid)) == (600, 200)
    no_finding = CHEXPERT_14.index("No Finding")
    # The folders agree with the labels except one film filed as normal but labelled Pneumonia.
    disagree = [i.id for i in train + valid if (i.target[no_finding] == 1) != ("0_normal" in i.path)]
    assert disagree == ["valid/0_normal/00000193_019.png"]
    covid = read_covid(shared_data / "covid_cxr", CHEXPERT_14)
    assert 400 < len(covid) < 653  # frontal, labelled ('todo' and laterals skipped)
