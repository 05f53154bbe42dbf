import torch

from crrg.observations import ANATOMICAL_REGIONS
from crrg.records import read_manifest
from crrg.rrg.detector import NUM_REGIONS, DetectorConfig, RegionDetector, targets_from_regions, to_rgb_tensor
from crrg.errors import ConfigError

import pytest


def test_config_rejects_unknown_backbone_and_sizes():
    with pytest.raises(ConfigError, match="backbone"):
        DetectorConfig.from_dict({"backbone": "vgg"})
    with pytest.raises(ConfigError, match="unknown detector option"):
        DetectorConfig.from_dict({"image_sise": 256})


def test_input_size_comes_from_the_config_not_torchvision_default():
    det = RegionDetector(DetectorConfig.from_dict({"image_size": 320}))
    assert det.frcnn.transform.min_size == (320,) and det.frcnn.transform.max_size == 320


def test_trains_a_few_steps_and_returns_exactly_one_box_per_region(tiny_manifest, tiny_config):
    from crrg.image import load_image

    torch.manual_seed(0)
    det = RegionDetector(DetectorConfig.from_dict(tiny_config["detector"]))
    records = read_manifest(tiny_manifest, split="train")[:2]
    images = [to_rgb_tensor(load_image(r.images[0].path)) for r in records]
    targets = [targets_from_regions(r.regions) for r in records]
    assert targets[0]["labels"].tolist() == list(range(1, NUM_REGIONS + 1))
    opt = torch.optim.AdamW(det.parameters(), lr=1e-4)
    losses = []
    for _ in range(4):
        loss = sum(det.losses(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    det.eval()
    big = to_rgb_tensor(torch.rand(130, 100))  # another size: boxes must come back in its pixels
    out = det.detect([images[0], big])
    for d, (h, w) in zip(out, [(64, 64), (130, 100)]):
        assert d.boxes.shape == (NUM_REGIONS, 4) and d.scores.shape == (NUM_REGIONS,)
        assert d.features.shape == (NUM_REGIONS, det.representation_size)
        assert (d.boxes[:, 2] > d.boxes[:, 0]).all() and (d.boxes[:, 3] > d.boxes[:, 1]).all()
        assert d.boxes[:, 0::2].min() >= 0 and d.boxes[:, 0::2].max() <= w + 1e-3
        assert d.boxes[:, 1::2].max() <= h + 1e-3


def test_targets_skip_other_images_and_empty_boxes(tiny_manifest):
    record = read_manifest(tiny_manifest)[0]
    record.regions[0].box = [5.0, 5.0, 5.0, 9.0]
    record.regions[1].image = 1
    t = targets_from_regions(record.regions, 0)
    assert len(t["labels"]) == len(ANATOMICAL_REGIONS) - 2
    assert 1 not in t["labels"].tolist() and 2 not in t["labels"].tolist()


def test_region_descriptors_append_thumbnail_and_normalised_box(tiny_config):
    torch.manual_seed(0)
    cfg = dict(tiny_config["detector"], region_descriptor_grid=3)
    det = RegionDetector(DetectorConfig.from_dict(cfg)).eval()
    assert det.feature_size == det.representation_size + 3 * 3 + 4
    image = torch.zeros(64, 64)
    image[:, 32:] = 1.0  # right half bright: the thumbnails of boxes there must be brighter
    d = det.detect([to_rgb_tensor(image)])[0]
    assert d.features.shape == (NUM_REGIONS, det.feature_size)
    geometry = d.features[:, -4:]
    assert geometry.min() >= 0 and geometry.max() <= 1 + 1e-5
    assert torch.allclose(geometry * 64, d.boxes, atol=1e-3)
    # a box in the bright half gets a brighter thumbnail than one in the dark half
    batch = torch.zeros(1, 3, 64, 64)
    batch[..., 32:] = 1.0
    boxes = torch.tensor([[0.0, 0.0, 30.0, 64.0], [34.0, 8.0, 64.0, 40.0]])
    desc = det._descriptors(batch, [boxes], [(64, 64)])
    assert desc.shape == (2, 3 * 3 + 4)
    assert torch.allclose(desc[0, :9], torch.zeros(9)) and torch.allclose(desc[1, :9], torch.ones(9))
    assert torch.allclose(desc[1, 9:], boxes[1] / 64)


def _two_studies(tiny_manifest):
    from crrg.image import load_image

    records = read_manifest(tiny_manifest, split="train")[:2]
    images = [to_rgb_tensor(load_image(r.images[0].path)) for r in records]
    return images, [targets_from_regions(r.regions) for r in records]


def test_losses_with_target_features_equal_torchvision_losses(tiny_manifest, tiny_config):
    det = RegionDetector(DetectorConfig.from_dict(tiny_config["detector"]))
    images, targets = _two_studies(tiny_manifest)
    torch.manual_seed(1)  # the RPN and box sampler draw at random: the same draws for both calls
    plain = det.losses(images, targets)
    torch.manual_seed(1)
    losses, feats = det.losses_and_target_features(images, targets)
    assert losses.keys() == plain.keys()
    for k in plain:
        torch.testing.assert_close(losses[k], plain[k])
    assert [f.shape for f in feats] == [(len(t["labels"]), det.feature_size) for t in targets]
    sum(f.sum() for f in feats).backward()  # the features reach the backbone: heads can train it
    assert det.frcnn.backbone.body["0"][0].weight.grad.abs().sum() > 0


def test_validation_losses_leave_batchnorm_statistics_alone(tiny_manifest, tiny_config):
    det = RegionDetector(DetectorConfig.from_dict(tiny_config["detector"]))
    images, targets = _two_studies(tiny_manifest)
    before = {k: v.clone() for k, v in det.state_dict().items() if "running" in k}
    with torch.no_grad():
        det.losses_and_target_features(images, targets, update_statistics=False)
        det.losses(images, targets, update_statistics=False)
    assert before and all(torch.equal(v, det.state_dict()[k]) for k, v in before.items())
    det.losses(images, targets)
    assert any(not torch.equal(v, det.state_dict()[k]) for k, v in before.items())
