import pytest
import torch

from crrg.errors import ConfigError
from crrg.models.registry import load_pretrained
from crrg.reporting import StudyInput
from crrg.rrg.task import STAGES, report_corpus, stage_config, train_stages
from crrg.training.tasks import get_task


def _config(manifest, tiny_config):
    return {"model": {"config": tiny_config}, "data": {"manifest": str(manifest)},
            "trainer": {"max_steps": 1, "batch_size": 2, "lr": 1e-3, "checkpoint_every_n_steps": 1},
            "stages": {"pretrain": {"trainer": {"max_steps": 2, "batch_size": 8}}}}


def test_stage_config_merges_per_stage_settings(tiny_manifest, tiny_config):
    cfg = stage_config(_config(tiny_manifest, tiny_config), "pretrain", "/x")
    assert cfg["trainer"]["max_steps"] == 2 and cfg["trainer"]["batch_size"] == 8 and cfg["trainer"]["lr"] == 1e-3
    assert cfg["stage"] == "pretrain" and cfg["model"]["init"] == "/x" and "stages" not in cfg
    assert get_task("rrg").stages == STAGES
    with pytest.raises(ConfigError, match="stage"):
        train_stages(_config(tiny_manifest, tiny_config), "/tmp/never", stages=("decoder",))


def test_corpus_has_region_sentences_and_reports(tiny_manifest, tiny_config):
    texts = report_corpus(_config(tiny_manifest, tiny_config))
    assert "the right lung is normal" in texts and len(texts) > 10


def test_all_stages_run_export_and_resume(tiny_manifest, tiny_config, tmp_path):
    from crrg.image import load_image

    torch.manual_seed(0)
    config = _config(tiny_manifest, tiny_config)
    final = train_stages(config, tmp_path / "run")
    for stage in STAGES:
        assert (tmp_path / "run" / stage / "model" / "config.json").is_file()
    model = load_pretrained(final)
    assert model.tokenizer is not None
    # later stages must not touch the frozen detector
    det = load_pretrained(tmp_path / "run" / "detector" / "model").detector.state_dict()
    assert all(torch.equal(v, model.detector.state_dict()[k]) for k, v in det.items())
    image = load_image(tiny_manifest.parent / "s0_pa.png")
    report = model.generate_report(StudyInput(images=[image], views=["PA"]))
    assert report.impression
    # the normal IMPRESSION is learned from the train split at export
    from crrg.records import read_manifest
    from crrg.rrg.task import normal_impression
    learned = normal_impression(read_manifest(tiny_manifest, split="train"))
    assert learned and model.normal_impression == learned
    # ... and so is the FINDINGS sentence order
    from crrg.rrg.ordering import SentenceOrder
    fitted = SentenceOrder.fit(r.findings for r in read_manifest(tiny_manifest, split="train"))
    assert fitted and model.sentence_order.before == fitted.before
    # a resumed pipeline skips finished stages instead of training them again
    before = (tmp_path / "run" / "joint" / "model" / "model.safetensors").stat().st_mtime_ns
    assert train_stages(config, tmp_path / "run", resume=True) == final
    assert (tmp_path / "run" / "joint" / "model" / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.parametrize("name", ["synth-small.yaml", "synth5k.yaml", "synth5k-classifier-conditioned.yaml"])
def test_shipped_yaml_gives_a_valid_engine_config_for_every_stage(name):
    from pathlib import Path

    import yaml

    from crrg.training.config import TrainerConfig

    path = Path(__file__).resolve().parents[2] / "configs" / "rrg" / name
    config = yaml.safe_load(path.read_text())
    for stage in STAGES:
        cfg = stage_config(config, stage, "/some/init")
        TrainerConfig.from_config(cfg)  # raises on an unknown or mistyped trainer key
        assert cfg["stage"] == stage
    trainer = stage_config(config, "detector", None)["trainer"]
    assert (trainer.get("max_steps") or 0) > 0 or (trainer.get("max_epochs") or 0) > 0


def test_global_findings_are_the_sentences_no_region_owns(tiny_manifest):
    from crrg.records import read_manifest
    from crrg.rrg.task import global_findings

    record = read_manifest(tiny_manifest)[0]
    assert global_findings(record) == ""
    record.findings += " No acute osseous abnormality."
    assert global_findings(record) == "No acute osseous abnormality."


def test_stage_model_from_an_export_without_the_newer_heads(tmp_path):
    from safetensors.torch import load_file, save_file

    from tests.rrg.conftest import untrained_model
    from crrg.errors import InputError
    from crrg.models.registry import save_pretrained
    from crrg.rrg.task import load_stage_model

    save_pretrained(untrained_model(), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if not k.startswith("global_query.")}, str(weights))
    model = load_stage_model(tmp_path / "m")
    assert torch.equal(model.global_query.query, torch.zeros_like(model.global_query.query))
    save_file({k: v for k, v in state.items() if not k.startswith("selection.")}, str(weights))
    with pytest.raises(InputError, match="do not fit"):
        load_stage_model(tmp_path / "m")


def test_resume_from_a_checkpoint_older_than_the_newer_heads(tiny_manifest, tiny_config):
    from crrg.rrg.task import RRGModule

    config = stage_config(_config(tiny_manifest, tiny_config), "detector", None)
    module = RRGModule(config)
    ckpt = {"state_dict": {k: v for k, v in module.state_dict().items() if "global_query" not in k}}
    module.on_load_checkpoint(ckpt)
    assert "model.global_query.query" in ckpt["state_dict"]
    module.load_state_dict(ckpt["state_dict"])  # strict, as Lightning does


def test_warm_start_takes_fitting_weights_and_the_tokenizer(saved_tiny_model, tiny_config, tiny_manifest):
    from crrg.models.registry import load_pretrained
    from crrg.rrg.task import build_rrg

    source = load_pretrained(saved_tiny_model)
    config = {"model": {"config": tiny_config, "warm_start": str(saved_tiny_model),
                        "overrides": {"detector": {"representation_size": 48, "region_descriptor_grid": 2}}},
              "data": {"manifest": str(tiny_manifest)}}
    model = build_rrg(config)
    assert model.detector.representation_size == 48 and model.tokenizer is not None
    assert model.tokenizer.get_vocab() == source.tokenizer.get_vocab()
    src, own = source.state_dict(), model.state_dict()
    backbone = [k for k in own if k.startswith("detector.frcnn.backbone.") and own[k].is_floating_point()]
    assert backbone and all(torch.equal(own[k], src[k]) for k in backbone)
    assert all(torch.equal(own[k], src[k]) for k in own if k.startswith("language."))
    assert own["projector.proj.1.weight"].shape[1] == 48 + 2 * 2 + 4
    with pytest.raises(Exception, match="not a saved rrg model"):
        build_rrg({**config, "model": {**config["model"], "warm_start": str(tiny_manifest.parent)}})


def test_best_f1_threshold_follows_the_data():
    from crrg.rrg.task import best_f1_threshold

    scores = torch.tensor([0.1, 0.2, 0.25, 0.3, 0.8, 0.9])
    targets = torch.tensor([0, 0, 1, 1, 1, 1])
    assert best_f1_threshold(scores, targets) == pytest.approx(0.25)
    assert best_f1_threshold(scores, torch.zeros(6)) == 0.5  # nothing to learn from: the default


def test_abnormal_pos_weight_raises_the_loss_of_missed_abnormal_regions(tiny_manifest, tiny_config):
    from crrg.rrg.task import RRGModule

    base = {"model": {"config": tiny_config}, "data": {"manifest": str(tiny_manifest)}, "stage": "classifiers"}
    feats = torch.zeros(1, 29, 64)
    batch = {"abnormal": torch.zeros(1, 29), "selected": torch.zeros(1, 29), "known": torch.ones(1, 29),
             "findings": torch.zeros(1, 14)}
    batch["abnormal"][0, 3] = 1
    torch.manual_seed(0)
    plain = RRGModule(base).eval()
    torch.manual_seed(0)
    weighted = RRGModule({**base, "loss": {"abnormal_pos_weight": 5.0}}).eval()
    f1, f2 = plain.model.region_features(feats), weighted.model.region_features(feats)
    assert weighted._head_losses(batch, f2)["abnormal"] > plain._head_losses(batch, f1)["abnormal"]


def test_scatter_regions_puts_features_at_their_region_and_masks_missing_ones():
    from crrg.rrg.task import scatter_regions

    feats = [torch.tensor([[1.0, 1.0], [2.0, 2.0]]), torch.tensor([[3.0, 3.0]])]
    targets = [{"labels": torch.tensor([5, 1])}, {"labels": torch.tensor([29])}]
    out, present = scatter_regions(feats, targets)
    assert out.shape == (2, 29, 2) and present.sum() == 3
    assert out[0, 4].tolist() == [1.0, 1.0] and out[0, 0].tolist() == [2.0, 2.0] and out[1, 28].tolist() == [3.0, 3.0]
    assert present[0, 4] == 1 and present[1, 0] == 0 and out[1, 0].abs().sum() == 0


def test_detector_stage_with_heads_trains_the_heads_through_the_detector(tiny_manifest, tiny_config):
    from crrg.rrg.task import DetectorDataset, RRGModule, collate_detector

    base = {"model": {"config": tiny_config}, "data": {"manifest": str(tiny_manifest)}, "stage": "detector"}
    torch.manual_seed(0)
    plain = RRGModule(base)
    with_heads = RRGModule({**base, "loss": {"detector_heads": 1.0}})
    assert not any(p.requires_grad for p in plain.model.abnormality.parameters())
    assert all(p.requires_grad for p in with_heads.model.abnormality.parameters())
    from crrg.records import read_manifest

    records = read_manifest(tiny_manifest, split="train")[:2]
    batch = collate_detector([DetectorDataset(records, 64)[i] for i in range(2)])
    with_heads.log = lambda *a, **k: None  # outside a Trainer
    loss = with_heads._step(batch, "train")
    loss.backward()
    assert with_heads.model.abnormality.mlp[0].weight.grad.abs().sum() > 0
    assert with_heads.model.detector.frcnn.roi_heads.box_head.fc6.weight.grad.abs().sum() > 0


def test_detector_stage_head_losses_use_the_loss_weights(tiny_manifest, tiny_config):
    from crrg.records import read_manifest
    from crrg.rrg.task import DetectorDataset, RRGModule, collate_detector

    config = {"model": {"config": tiny_config}, "data": {"manifest": str(tiny_manifest)}, "stage": "detector",
              "loss": {"detector_heads": 2.0, "selection": 0.0, "abnormal": 1.0, "findings": 0.5}}
    module = RRGModule(config)
    logged = {}
    module.log = lambda name, value, **k: logged.__setitem__(name, float(value))  # outside a Trainer
    records = read_manifest(tiny_manifest, split="train")[:2]
    module._step(collate_detector([DetectorDataset(records, 64)[i] for i in range(2)]), "train")
    assert logged["train_heads_selection"] == 0.0 and logged["train_heads_abnormal"] > 0
    assert logged["train_heads_findings"] > 0


class _TwoFindings:
    """An attached classifier (crrg.rrg.joint.FindingSource) that knows two findings."""

    def __init__(self):
        self.calls = 0

    def predict_proba(self, study):
        self.calls += 1
        return {"Pleural Effusion": 0.8, "Edema": float(study.images[0].mean())}


def test_language_stages_are_conditioned_on_the_attached_classifier(tiny_manifest, tiny_config, tmp_path, monkeypatch):
    from crrg.observations import CHEXPERT_14
    from crrg.records import read_manifest
    from crrg.rrg.task import RRGModule, StudyFeatureDataset, classifier_conditions, collate_studies
    from tests.rrg.conftest import untrained_model

    model = untrained_model(tiny_config)
    records = read_manifest(tiny_manifest, split="train")
    assert classifier_conditions(model, records, tmp_path, "train") is None  # nothing attached
    model.finding_source = source = _TwoFindings()
    conditions = classifier_conditions(model, records, tmp_path, "train")
    effusion, edema = CHEXPERT_14.index("Pleural Effusion"), CHEXPERT_14.index("Edema")
    assert conditions.shape == (len(records), len(CHEXPERT_14)) and source.calls == len(records)
    assert torch.allclose(conditions[:, effusion], torch.full((len(records),), 0.8))
    assert torch.isnan(conditions[:, CHEXPERT_14.index("Cardiomegaly")]).all()
    assert torch.equal(classifier_conditions(model, records, tmp_path, "train")[:, effusion], conditions[:, effusion])
    assert source.calls == len(records)  # the second call read the cache

    # the decoder's condition: the classifier's probabilities, the finding head's where it has none
    config = {**_config(tiny_manifest, tiny_config), "stage": "language", "loss": {"condition_dropout": 0}}
    module = RRGModule(config)
    seen = []
    monkeypatch.setattr(module.model.language, "conditioned_loss", lambda inputs, ids, mask, cond: seen.append(cond) or cond.sum())
    features = torch.zeros(len(records), 29, module.model.detector.feature_size)
    batch = collate_studies([StudyFeatureDataset(records, features, conditions)[i] for i in range(len(records))])
    head = torch.full((len(records), len(CHEXPERT_14)), 0.25)
    module._lm_batch(batch, module.model.region_features(batch["features"]), head)
    cond = seen[0]
    assert torch.allclose(cond[:, effusion], torch.tensor(0.8)) and not torch.allclose(cond[:, edema], torch.tensor(0.25))
    assert torch.allclose(cond[:, CHEXPERT_14.index("Cardiomegaly")], torch.tensor(0.25))
