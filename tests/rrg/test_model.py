import numpy as np
import pytest
import torch

from tests.rrg.conftest import TINY_CONFIG, untrained_model
from crrg.errors import ConfigError, InputError
from crrg.models.registry import build_model, load_pretrained, save_pretrained
from crrg.observations import ANATOMICAL_REGIONS, CHEXPERT_14
from crrg.reporting import StudyInput


def _study(views=("PA", "LATERAL"), seed=0):
    rng = np.random.default_rng(seed)
    return StudyInput(images=[rng.random((80, 70), dtype=np.float32) for _ in views], views=list(views))


def test_report_has_a_sentence_per_selected_region_with_region_and_box():
    model = untrained_model()
    report = model.generate_report(_study(), beams=2)
    assert len(report.regions) == len(ANATOMICAL_REGIONS)
    assert all(r.selected for r in report.regions)  # selection threshold 0 in this fixture
    assert report.sentences and all(s.region in ANATOMICAL_REGIONS and len(s.box) == 4 for s in report.sentences)
    assert all(0 <= s.box[0] < s.box[2] <= 70 + 1e-3 for s in report.sentences)
    assert set(report.probabilities) == set(CHEXPERT_14)
    assert report.findings and report.impression
    assert report.timings_ms["total_ms"] > 0
    # the model reads regions from the frontal image, wherever it is in the study
    swapped = model.generate_report(StudyInput(images=[np.zeros((50, 50), np.float32), _study().images[0]],
                                               views=["LATERAL", "PA"]))
    assert {s.image for s in swapped.sentences} == {1}


def test_nothing_selected_gives_the_normal_report():
    model = untrained_model(select_all=False)
    model.thresholds.selection = 1.1
    model.thresholds.abnormal = 1.1
    model.thresholds.findings = {name: 1.1 for name in CHEXPERT_14}  # a positive finding asks for an impression
    model.global_sentences = False  # whole-study sentences would still be written
    report = model.generate_report(_study())
    assert report.sentences == [] and report.impression == "No acute cardiopulmonary abnormality."


def test_save_load_round_trip(tmp_path):
    model = untrained_model()
    model.thresholds.findings = {"Edema": 0.3}
    save_pretrained(model, tmp_path / "m")
    loaded = load_pretrained(tmp_path / "m")
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.thresholds.findings == {"Edema": 0.3} and loaded.thresholds.selection == 0.0
    assert loaded.generate_report(_study()).report == model.generate_report(_study()).report


def test_user_errors_are_crrg_errors():
    model = untrained_model()
    with pytest.raises(InputError, match="only lateral"):
        model.generate_report(_study(views=("LATERAL",)))
    with pytest.raises(InputError, match="no images"):
        model.generate_report(StudyInput(images=[], views=[]))
    with pytest.raises(ConfigError, match="unknown decoding option.*beam_size"):
        model.generate_report(_study(), beam_size=3)
    with pytest.raises(ConfigError, match="never trained"):
        build_model(dict(TINY_CONFIG)).generate_report(_study())


def test_joint_modes_run_and_rerank_uses_labeler():
    pytest.importorskip("crrg.labeler")
    model = untrained_model()
    for mode in ("off", "condition", "rerank"):
        report = model.generate_report(_study(), joint=mode)
        assert len(report.sentences) >= 1


def _spy_on_impression_query(model, monkeypatch) -> list:
    """Record the abnormal-region mask of every call that asks the decoder for an IMPRESSION."""
    seen = []
    original = model.impression_query.forward

    def spy(features, abnormal):
        seen.append(abnormal.clone())
        return original(features, abnormal)

    monkeypatch.setattr(model.impression_query, "forward", spy)
    return seen


def test_abnormal_regions_make_the_model_write_the_impression(monkeypatch):
    model = untrained_model()
    model.thresholds.abnormal = 0.0  # every region abnormal
    seen = _spy_on_impression_query(model, monkeypatch)
    report = model.generate_report(_study())
    assert seen and bool(seen[0].all())
    assert report.impression != "No acute cardiopulmonary abnormality."


def test_a_positive_finding_asks_for_an_impression_from_the_likeliest_abnormal_region(monkeypatch):
    model = untrained_model()
    model.thresholds.abnormal = 1.1  # no region passes its own threshold
    model.thresholds.findings = {name: (0.0 if name == "Pleural Effusion" else 1.1) for name in CHEXPERT_14}
    seen = _spy_on_impression_query(model, monkeypatch)
    model.generate_report(_study())
    assert len(seen) == 1 and int(seen[0].sum()) >= 1
    # "No Finding" alone is no reason for an impression
    seen.clear()
    model.thresholds.findings = {name: (0.0 if name == "No Finding" else 1.1) for name in CHEXPERT_14}
    model.generate_report(_study())
    assert seen == []


def test_consensus_decoding_writes_one_of_the_beam_candidates(monkeypatch):
    import crrg.rrg.decoding as rrg_model

    model = untrained_model()
    chosen = []
    original = rrg_model.consensus

    def spy(candidates, weights=None):
        out = original(candidates, weights)
        chosen.append((list(candidates), out))
        return out

    monkeypatch.setattr(rrg_model, "consensus", spy)
    report = model.generate_report(_study(), consensus=3)
    assert chosen and all(len(c) == 3 and out in c for c, out in chosen)
    assert report.sentences
    chosen.clear()
    model.decoding = model.decoding.replace(consensus=3)  # the model's decoding.json
    model.generate_report(_study())
    assert chosen
    chosen.clear()
    model.generate_report(_study(), consensus=0)
    assert not chosen


def test_normal_impression_and_consensus_come_from_the_config_and_survive_saving(tmp_path):
    config = dict(TINY_CONFIG, assembly={"normal_impression": "No active disease."}, decoding={"consensus": 2})
    model = build_model(config)
    assert model.normal_impression == "No active disease." and model.decoding.consensus == 2
    save_pretrained(model, tmp_path / "m")
    loaded = load_pretrained(tmp_path / "m")
    assert loaded.normal_impression == "No active disease." and loaded.decoding.consensus == 2
    assert build_model(dict(TINY_CONFIG)).normal_impression == "No acute cardiopulmonary abnormality."


def test_learned_sentence_order_survives_saving_and_can_be_turned_off(tmp_path, monkeypatch):
    from crrg.rrg import decoding as rrg_model
    from crrg.rrg.ordering import ORDER_FILE, SentenceOrder

    model = untrained_model()
    model.sentence_order = SentenceOrder({("Pleural Effusion=1", "Cardiomegaly=0"): 3})
    save_pretrained(model, tmp_path / "m")
    loaded = load_pretrained(tmp_path / "m")
    assert loaded.sentence_order.before == model.sentence_order.before
    seen = []
    real = rrg_model.assemble_report
    monkeypatch.setattr(rrg_model, "assemble_report", lambda *a, **kw: seen.append(kw["order"]) or real(*a, **kw))
    loaded.generate_report(_study())
    loaded.generate_report(_study(), learned_order=False)
    assert seen[0] is loaded.sentence_order and seen[1] is None
    # a model saved again without a table does not keep the old file
    loaded.sentence_order = None
    save_pretrained(loaded, tmp_path / "m")
    assert not (tmp_path / "m" / ORDER_FILE).exists()


def test_impression_agreement_comes_from_the_config_and_picks_among_the_impression_candidates(tmp_path, monkeypatch):
    from crrg.rrg import joint

    config = dict(TINY_CONFIG, decoding={"consensus": 3, "impression_agreement": True})
    save_pretrained(build_model(config), tmp_path / "m")
    assert load_pretrained(tmp_path / "m").decoding.impression.value == "agreement"
    model = untrained_model(config)
    model.thresholds.abnormal = 0.0  # every region abnormal: an IMPRESSION is written
    calls = []
    real = joint.agreeing_impression
    monkeypatch.setattr(joint, "agreeing_impression", lambda c, f: calls.append(list(c)) or real(c, f))
    model.generate_report(_study(), joint="condition")
    assert len(calls) == 1 and len(calls[0]) == 3
    calls.clear()
    model.generate_report(_study(), joint="condition", impression="top")
    assert not calls


def test_normal_impression_is_the_consensus_of_the_training_impressions_that_state_no_finding():
    from crrg.records import StudyRecord
    from crrg.rrg.task import normal_impression

    texts = ["No acute cardiopulmonary process."] * 3 + ["No acute intrathoracic process."] * 2 + \
            ["Normal chest radiograph."] * 3 + ["Large left pleural effusion."] * 9 + \
            ["Support devices in appropriate position."] * 9
    records = [StudyRecord(id=str(i), impression=t) for i, t in enumerate(texts)]
    assert normal_impression(records) == "No acute cardiopulmonary process."
    assert normal_impression([StudyRecord(id="x", impression="Cardiomegaly.")]) is None


def test_one_beam_search_writes_the_impression_the_whole_study_sentences_and_every_region(monkeypatch):
    """On a CPU the decoder's step loop is most of a report's time, so a report runs it once."""
    model = untrained_model()
    model.thresholds.abnormal = 0.0  # every region abnormal: an impression is asked for too
    calls = []
    original = model.language.generate

    def spy(inputs, cond=None, **kwargs):
        calls.append(inputs.shape[0])
        return original(inputs, cond, **kwargs)

    monkeypatch.setattr(model.language, "generate", spy)
    report = model.generate_report(_study(), consensus=2)
    assert calls == [1 + 1 + len(ANATOMICAL_REGIONS)]  # impression, whole-study sentences, 29 regions
    assert report.impression and report.sentences
