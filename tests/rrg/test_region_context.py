"""Region context: the attached classifier's tower pooled inside each region box (crrg.rrg.region_context)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crrg.errors import ConfigError
from crrg.observations import ANATOMICAL_REGIONS
from crrg.reporting import StudyInput

CONTEXT = {"layers": ["layer3", "layer4"], "channels": 768}  # resnet18: 256 + 512


def _classifier(size: int = 64):
    from crrg.models import create_model

    torch.manual_seed(0)
    return create_model("classifier-resnet18", labels=["Lung Lesion", "Cardiomegaly"],
                        image_encoder={"image_size": size}).eval()


def _with_context(config=None):
    from crrg.rrg import joint
    from tests.rrg.conftest import TINY_CONFIG, untrained_model

    model = untrained_model({**(config or TINY_CONFIG), "region_context": dict(CONTEXT)})
    joint.attach_classifier(model, joint.ImageClassifierFindings(_classifier()))
    return model


def _boxes(*boxes):
    out = torch.tensor([[0.0, 0.0, 16.0, 16.0]] * len(ANATOMICAL_REGIONS))
    for i, b in enumerate(boxes):
        out[i] = torch.tensor(b, dtype=torch.float32)
    return out


def test_context_is_what_the_tower_sees_inside_each_box_in_the_image_s_own_pixels():
    from crrg.rrg.region_context import RegionContext, RegionContextConfig

    context = RegionContext(RegionContextConfig(**CONTEXT))
    clf = _classifier()
    image = np.full((64, 64), 0.1, np.float32)
    image[8:24, 40:56] = 0.9  # a bright blob in the upper right
    blob, elsewhere = [40.0, 8.0, 56.0, 24.0], [8.0, 40.0, 24.0, 56.0]
    square = context(clf, [image], [_boxes(blob, elsewhere)])
    assert square.shape == (1, len(ANATOMICAL_REGIONS), 768)
    assert not torch.allclose(square[0, 0], square[0, 1], atol=1e-3)
    # the same picture stored twice as wide: boxes in its pixels pool the same places of the tower's
    # (square-resized) input, so the context barely moves
    wide = np.repeat(image, 2, axis=1)
    stretched = context(clf, [wide], [_boxes([80.0, 8.0, 112.0, 24.0], [16.0, 40.0, 48.0, 56.0])])
    assert torch.allclose(stretched[0, :2], square[0, :2], atol=0.05 * float(square[0, :2].abs().max()))


def test_a_model_with_region_context_needs_its_classifier_and_the_right_width():
    from crrg.rrg import joint
    from tests.rrg.conftest import TINY_CONFIG, untrained_model

    study = StudyInput(images=[np.random.default_rng(0).random((64, 64), dtype=np.float32)], views=["PA"])
    bare = untrained_model({**TINY_CONFIG, "region_context": dict(CONTEXT)})
    with pytest.raises(ConfigError, match="attached CLIP classifier"):
        bare.generate_report(study)
    wrong = untrained_model({**TINY_CONFIG, "region_context": {**CONTEXT, "channels": 512}})
    joint.attach_classifier(wrong, joint.ImageClassifierFindings(_classifier()))
    with pytest.raises(ConfigError, match="channels is 512 .* give 768"):
        wrong.generate_report(study)
    with pytest.raises(ConfigError, match=r"rrg\.region_context\.layer"):
        untrained_model({**TINY_CONFIG, "region_context": {"layer": "layer4"}})
    with pytest.raises(ValueError, match="this model takes"):
        _with_context().region_features(torch.zeros(1, len(ANATOMICAL_REGIONS), bare.detector.feature_size))


def test_the_context_starts_at_zero_so_a_warm_started_model_writes_what_it_wrote_before():
    from tests.rrg.conftest import untrained_model

    plain, model = untrained_model(), _with_context()
    model.load_state_dict(plain.state_dict(), strict=False)
    study = StudyInput(images=[np.random.default_rng(1).random((64, 64), dtype=np.float32)], views=["PA"])
    inputs = torch.randn(2, len(ANATOMICAL_REGIONS), model.input_width)
    assert torch.equal(model.region_features(inputs), plain.region_features(inputs[..., :plain.input_width]))
    plain.finding_source = model.finding_source
    assert model.generate_report(study).report == plain.generate_report(study).report


def test_the_classifiers_stage_learns_the_context_of_a_model_it_adds_it_to(tiny_manifest, tiny_config, tmp_path):
    from crrg.models import load_pretrained, save_pretrained
    from crrg.rrg import joint
    from crrg.rrg.task import train_stages
    from tests.rrg.conftest import untrained_model

    start = untrained_model(tiny_config)
    joint.attach_classifier(start, joint.ImageClassifierFindings(_classifier()))
    save_pretrained(start, tmp_path / "start")
    config = {"model": {"init": str(tmp_path / "start"), "overrides": {"region_context": dict(CONTEXT)}},
              "data": {"manifest": str(tiny_manifest)}, "loss": {"detector_heads": 0.0},
              "trainer": {"max_steps": 3, "batch_size": 4, "lr": 1e-2, "checkpoint_every_n_steps": 1}}
    out = train_stages(config, tmp_path / "run", stages=("classifiers",))
    model = load_pretrained(out)
    assert model.crrg_config["region_context"]["channels"] == 768 and model.finding_source is not None
    assert float(model.context_projector[1].weight.detach().abs().sum()) > 0  # trained away from its zero start
    from crrg.rrg.feature_cache import load_cached

    cache = list((tmp_path / "run" / "feature_cache").glob("rrg-features-*.safetensors"))  # tensors only, no pickle
    assert cache and load_cached(cache[0]).shape[-1] == model.input_width
    image = np.random.default_rng(2).random((64, 64), dtype=np.float32)
    assert model.generate_report(StudyInput(images=[image], views=["PA"])).findings is not None


def test_the_detector_stage_refuses_head_losses_that_would_skip_the_context(tiny_manifest, tiny_config):
    from crrg.rrg.task import RRGModule

    config = {"model": {"config": {**tiny_config, "region_context": dict(CONTEXT)}}, "stage": "detector",
              "data": {"manifest": str(tiny_manifest)}, "loss": {"detector_heads": 1.0}}
    with pytest.raises(ConfigError, match="detector_heads"):
        RRGModule(config)


def test_the_decoder_s_loss_also_shapes_the_context_projection(tiny_manifest, tiny_config):
    from crrg.rrg.task import RRGModule

    config = {"model": {"config": {**tiny_config, "region_context": dict(CONTEXT)}}, "stage": "language",
              "data": {"manifest": str(tiny_manifest)}}
    module = RRGModule(config)
    assert all(p.requires_grad for p in module.model.context_projector.parameters())
    assert not any(p.requires_grad for p in module.model.projector.parameters())


def test_cached_region_inputs_are_keyed_by_the_tower_so_a_new_classifier_recomputes_them(tiny_manifest, tmp_path):
    from crrg.records import read_manifest
    from crrg.rrg import joint
    from crrg.rrg.task import compute_features

    model = _with_context()
    records = read_manifest(tiny_manifest, split="train")
    first = compute_features(model, records, tmp_path, "train")
    assert first.shape == (len(records), len(ANATOMICAL_REGIONS), model.input_width)
    other = _classifier()
    with torch.no_grad():
        for p in other.image_encoder.parameters():
            p.mul_(1.5)
    joint.attach_classifier(model, joint.ImageClassifierFindings(other))
    second = compute_features(model, records, tmp_path, "train")
    assert len(list(tmp_path.glob("rrg-features-*.safetensors"))) == 2
    size = model.detector.feature_size
    assert torch.equal(first[..., :size], second[..., :size]) and not torch.equal(first[..., size:], second[..., size:])
