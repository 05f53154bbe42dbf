from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from crrg.clip.data import (ImageAugment, ImageTextDataset, TextAugment, label_targets, read_image_folder, report_text)
from crrg.errors import ConfigError, ImageError
from crrg.records import ImageRef, StudyRecord, read_manifest


def _record(**kw) -> StudyRecord:
    return StudyRecord(id="a", images=[ImageRef("x.png", "PA")], **kw)


def test_report_section_choice_and_fallback():
    r = _record(findings="Small effusion.", impression="Effusion.")
    assert report_text(r, "findings") == "Small effusion."
    assert report_text(r, "impression") == "Effusion."
    assert report_text(r, "both") == "Small effusion. Effusion."
    assert report_text(_record(impression="Only impression."), "findings") == "Only impression."
    with pytest.raises(ConfigError):
        report_text(r, "history")


def test_dataset_uses_chosen_section_and_augmentation_is_seeded(tiny_data):
    records = read_manifest(tiny_data, split="train")
    plain = ImageTextDataset(records, 32, section="impression")
    assert plain[0]["text"] == records[0].impression and plain[0]["image"].shape == (1, 32, 32)
    aug = ImageTextDataset(records, 32, section="findings", image_augment=ImageAugment(), text_augment=TextAugment())
    from crrg.training.seeding import seeded

    with seeded(3):
        a = aug[1]
    with seeded(3):
        b = aug[1]
    assert torch.equal(a["image"], b["image"]) and a["text"] == b["text"]  # the engine seeds each (seed, epoch, index)
    assert not torch.equal(a["image"], plain[1]["image"])
    texts = {aug[i]["text"] for i in range(len(aug))}
    assert texts - {r.findings for r in records}  # sentences shuffled or dropped


def test_text_augment_keeps_sentences_from_the_report():
    text = "One. Two. Three. Four."
    out = TextAugment(drop_probability=0.5)(text, random.Random(0))
    assert out and set(out.split(" ")) <= {"One.", "Two.", "Three.", "Four."}


def test_single_sentence_texts_keep_the_set_of_texts_small():
    text = "One. Two. Three. Four."
    aug = TextAugment(shuffle=False, drop_probability=0.0, single_sentence_probability=0.5)
    rng = random.Random(0)
    outs = [aug(text, rng) for _ in range(400)]
    assert set(outs) == {text, "One.", "Two.", "Three.", "Four."}  # whole report or one sentence, nothing else
    assert 120 < outs.count(text) < 280


def test_text_augment_config_accepts_its_fields_only():
    from crrg.clip.task import _text_augment
    from crrg.errors import ConfigError

    assert _text_augment(False) is None and _text_augment(True) == TextAugment()
    assert _text_augment({"single_sentence_probability": 0.3, "shuffle": False}).single_sentence_probability == 0.3
    with pytest.raises(ConfigError, match="sentence_probabilty"):
        _text_augment({"sentence_probabilty": 0.3})


def test_label_targets_policies():
    r = _record(labels={"Cardiomegaly": 1, "Edema": -1, "Atelectasis": 0})
    names = ["Cardiomegaly", "Edema", "Atelectasis", "Fracture"]
    assert label_targets(r, names) == ([1.0, 1.0, 0.0, 0.0], [1.0] * 4)
    assert label_targets(r, names, uncertain="ignore", unknown="ignore") == ([1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0])


def test_missing_image_in_dataset_is_an_image_error(tmp_path):
    ds = ImageTextDataset([StudyRecord(id="a", images=[ImageRef(str(tmp_path / "gone.png"), "PA")], findings="x.")], 32)
    with pytest.raises(ImageError, match="gone.png"):
        ds[0]


def test_nih_image_folder_reader(shared_data):
    items, labels = read_image_folder(shared_data / "nih1000_64px" / "valid")
    assert labels == ["abnormal"] and len(items) == 200
    assert sum(it.target[0] for it in items) == 100


def test_rare_sentence_power_draws_the_sentences_that_tell_reports_apart():
    corpus = ["No pneumothorax. Heart is normal."] * 50 + ["No pneumothorax. Small nodule in the right upper lobe."]
    aug = TextAugment(shuffle=False, drop_probability=0.0, single_sentence_probability=1.0, rare_sentence_power=1.0)
    aug.fit(corpus)
    rng = random.Random(0)
    outs = [aug(corpus[-1], rng) for _ in range(300)]
    assert outs.count("Small nodule in the right upper lobe.") > 250  # weight 1 against 1/51
    uniform = TextAugment(shuffle=False, drop_probability=0.0, single_sentence_probability=1.0)
    outs = [uniform(corpus[-1], rng) for _ in range(300)]
    assert 100 < outs.count("Small nodule in the right upper lobe.") < 200


def test_dataset_fits_rare_sentence_counts_on_its_own_reports():
    records = [StudyRecord(id=f"s{i}", images=[ImageRef("x.png", "PA")], findings="No effusion. Heart normal.")
               for i in range(3)]
    aug = TextAugment(shuffle=False, drop_probability=0.0, single_sentence_probability=1.0, rare_sentence_power=0.5)
    ImageTextDataset(records, 32, section="findings", text_augment=aug)
    assert aug.sentence_counts == {"No effusion.": 3, "Heart normal.": 3}


def test_primary_image_follows_the_one_frontal_rule():
    """CLIP pairs read the frontal film by crrg.observations.frontal_index: an unlabelled film beats a
    lateral one; a lateral-only study still gives its first film."""
    from crrg.clip.data import primary_image

    def study(*views):
        return StudyRecord(id="s", images=[ImageRef(f"{i}.png", v) for i, v in enumerate(views)])

    assert primary_image(study("LATERAL", "unknown")) == "1.png"
    assert primary_image(study("LATERAL", "AP")) == "1.png"
    assert primary_image(study("LATERAL", "LL")) == "0.png"
    assert primary_image(StudyRecord(id="s", images=[])) is None
