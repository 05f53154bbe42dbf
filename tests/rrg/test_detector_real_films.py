"""The detector's real-film options: contrast normalisation before detection, score-weighted box votes,
and the per-region box calibration that maps the synthetic box convention onto the annotated one
(issue 20). None of them may change the region features the report heads read, except the contrast
normalisation, which is the detector's input."""

import pytest
import torch

from crrg.errors import ConfigError
from crrg.observations import ANATOMICAL_REGIONS
from crrg.rrg.detector import (DetectorConfig, RegionDetector, calibrate_boxes, mirror_name, stretch_contrast,
                               targets_from_regions, to_rgb_tensor)


def _detector(tiny_config, **options) -> RegionDetector:
    torch.manual_seed(0)
    return RegionDetector(DetectorConfig.from_dict({**tiny_config["detector"], **options})).eval()


def _film() -> torch.Tensor:
    torch.manual_seed(3)
    image = torch.rand(72, 64) * 0.2
    image[10:60, 6:28] += 0.7  # two bright "lungs" on a dark film
    image[12:58, 36:60] += 0.6
    return image.clamp(0, 1)


def test_stretch_maps_the_percentiles_to_black_and_white_and_spares_flat_films():
    image = torch.linspace(0.3, 0.7, 101).reshape(1, 101)
    out = stretch_contrast(image, (0.0, 100.0))
    assert out.min() == 0 and out.max() == 1
    torch.testing.assert_close(out, (image - 0.3) / 0.4)
    clipped = stretch_contrast(image, (10.0, 90.0))
    assert (clipped == 0).sum() >= 10 and (clipped == 1).sum() >= 10
    flat = torch.full((8, 8), 0.4)
    assert torch.equal(stretch_contrast(flat, (1.0, 99.0)), flat)
    assert stretch_contrast(image, None) is image


def test_a_washed_out_film_is_detected_like_the_full_contrast_one(tiny_config):
    film = _film()
    washed = 0.35 + 0.4 * film  # a flat LUT: what a JPEG figure or portable film often looks like
    plain = _detector(tiny_config)
    assert not torch.allclose(plain.detect([to_rgb_tensor(washed)])[0].boxes, plain.detect([to_rgb_tensor(film)])[0].boxes)
    det = _detector(tiny_config, contrast_percentiles=[0, 100])
    a, b = det.detect([to_rgb_tensor(washed)])[0], det.detect([to_rgb_tensor(film)])[0]
    torch.testing.assert_close(a.boxes, b.boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(a.features, b.features, atol=1e-4, rtol=1e-4)


def test_training_losses_see_the_same_normalised_film(tiny_manifest, tiny_config):
    from crrg.records import read_manifest

    record = read_manifest(tiny_manifest, split="train")[0]
    film = _film()
    film = (film - film.min()) / (film.max() - film.min())
    target = targets_from_regions(record.regions)
    det = _detector(tiny_config, contrast_percentiles=[0, 100])
    torch.manual_seed(1)
    washed = det.losses([to_rgb_tensor(0.2 + 0.5 * film)], [target], update_statistics=False)
    torch.manual_seed(1)
    full = det.losses([to_rgb_tensor(film)], [target], update_statistics=False)
    for k in full:
        torch.testing.assert_close(washed[k], full[k], atol=1e-4, rtol=1e-4)


def test_box_calibration_moves_the_named_regions_returned_boxes_only(tiny_config):
    film = to_rgb_tensor(_film())
    plain = _detector(tiny_config).detect([film])[0]
    shifts = {"right lung": [0.1, -0.05, -0.2, 0.0], "left lung": [0.15, 0.0, 0.0, -0.1]}
    calibrated = _detector(tiny_config, box_calibration=shifts).detect([film])[0]
    for i, name in enumerate(ANATOMICAL_REGIONS):
        box = plain.boxes[i]
        if name in shifts:
            size = torch.stack([box[2] - box[0], box[3] - box[1]] * 2)
            expected = (box + torch.tensor(shifts[name]) * size).clamp(min=0)
            torch.testing.assert_close(calibrated.boxes[i], torch.minimum(expected, torch.tensor([64.0, 72, 64, 72])))
        else:
            torch.testing.assert_close(calibrated.boxes[i], box)
    # the report heads read features pooled at the detector's own boxes: unchanged by the calibration,
    # and the region context is pooled at those boxes too
    torch.testing.assert_close(calibrated.features, plain.features)
    torch.testing.assert_close(calibrated.pooling_boxes, plain.boxes)
    torch.testing.assert_close(plain.pooling_boxes, plain.boxes)
    torch.testing.assert_close(calibrated.scores, plain.scores)


def test_calibrate_boxes_without_calibration_is_the_identity():
    boxes = torch.rand(len(ANATOMICAL_REGIONS), 4)
    assert calibrate_boxes(boxes, {}) is boxes


@pytest.mark.parametrize("options, message", [
    ({"contrast_percentiles": [99, 1]}, "contrast_percentiles"),
    ({"contrast_percentiles": [0, 101]}, "contrast_percentiles"),
    ({"box_calibration": {"right lungs": [0, 0, 0, 0]}}, "not one of the 29 regions"),
    ({"box_calibration": {"right lung": [0, 0, 0]}}, "four edge shifts"),
    ({"box_calibration": {"right lung": [0, 0, 0.9, 0]}}, "four edge shifts"),
    ({"box_votes": 0}, "box_votes"),
    ({"mirror_regions": ["right atrium"]}, "mirror image"),
])
def test_config_refuses_absurd_real_film_options(options, message):
    with pytest.raises(ConfigError, match=message):
        DetectorConfig.from_dict(options)


def test_real_film_options_survive_a_save_and_load(tmp_path, tiny_config):
    from crrg.models.registry import load_pretrained, save_pretrained
    from tests.rrg.conftest import untrained_model

    cfg = {**tiny_config, "detector": {**tiny_config["detector"], "contrast_percentiles": [1, 99],
                                       "box_calibration": {"left lung": [0.1, 0.0, 0.0, -0.05]}}}
    save_pretrained(untrained_model(cfg), tmp_path / "m")
    loaded = load_pretrained(tmp_path / "m")
    assert loaded.detector.cfg.contrast_percentiles == (1.0, 99.0)
    assert loaded.detector.cfg.box_calibration == {"left lung": (0.1, 0.0, 0.0, -0.05)}


def test_box_votes_average_the_best_proposals_class_boxes_by_score(tiny_config):
    det = _detector(tiny_config, box_votes=2)
    n = 4
    boxes = torch.rand(n, len(ANATOMICAL_REGIONS) + 1, 4) * 10
    boxes[..., 2:] += 20  # valid boxes
    scores = torch.rand(n, len(ANATOMICAL_REGIONS))
    chosen = boxes[scores.argmax(0), torch.arange(len(ANATOMICAL_REGIONS)) + 1]
    voted = det._voted(boxes, scores, chosen)
    for c in range(len(ANATOMICAL_REGIONS)):
        s, i = scores[:, c].topk(2)
        expected = (boxes[i, c + 1] * (s / s.sum())[:, None]).sum(0)
        torch.testing.assert_close(voted[c], expected)
    assert _detector(tiny_config)._voted(boxes, scores, chosen) is chosen  # box_votes 1: the best proposal's


def test_box_votes_change_the_returned_boxes_not_the_features(tiny_config):
    film = to_rgb_tensor(_film())
    plain = _detector(tiny_config).detect([film])[0]
    voted = _detector(tiny_config, box_votes=5).detect([film])[0]
    assert not torch.allclose(voted.boxes, plain.boxes)
    torch.testing.assert_close(voted.features, plain.features)
    torch.testing.assert_close(voted.pooling_boxes, plain.boxes)
    torch.testing.assert_close(voted.scores, plain.scores)
    assert (voted.boxes[:, 2:] > voted.boxes[:, :2]).all()


def test_mirror_name_swaps_sides_and_keeps_midline_regions():
    assert mirror_name("right lung") == "left lung" and mirror_name("left costophrenic angle") == "right costophrenic angle"
    assert mirror_name("trachea") == "trachea"


def test_mirrored_boxes_treat_a_film_and_its_mirror_image_alike(tiny_config):
    film = _film()
    width = film.shape[-1]
    lungs = ("right lung", "left lung")
    det = _detector(tiny_config, mirror_regions=list(lungs), box_votes=3)
    own, flipped = det.detect([to_rgb_tensor(film)])[0], det.detect([to_rgb_tensor(film.flip(-1))])[0]
    for name in lungs:  # both are the mean of the same two looks, so they agree exactly
        x1, y1, x2, y2 = flipped.boxes[ANATOMICAL_REGIONS.index(mirror_name(name))]
        torch.testing.assert_close(own.boxes[ANATOMICAL_REGIONS.index(name)],
                                   torch.stack([width - x2, y1, width - x1, y2]), atol=1e-3, rtol=0)
    plain = _detector(tiny_config, box_votes=3).detect([to_rgb_tensor(film)])[0]
    torch.testing.assert_close(own.features, plain.features)
    others = [i for i, n in enumerate(ANATOMICAL_REGIONS) if n not in lungs]
    torch.testing.assert_close(own.boxes[others], plain.boxes[others])
    assert not torch.allclose(own.boxes[0], plain.boxes[0])


def test_contrast_for_boxes_only_keeps_the_features_of_the_film_as_loaded(tiny_config):
    washed = 0.35 + 0.4 * _film()
    grid = 2  # the features carry each region's thumbnail, which the stretch brightens
    plain = _detector(tiny_config, region_descriptor_grid=grid).detect([to_rgb_tensor(washed)])[0]
    stretched = _detector(tiny_config, region_descriptor_grid=grid,
                          contrast_percentiles=[0, 100]).detect([to_rgb_tensor(washed)])[0]
    both = _detector(tiny_config, region_descriptor_grid=grid, contrast_percentiles=[0, 100],
                     contrast_boxes_only=True).detect([to_rgb_tensor(washed)])[0]
    torch.testing.assert_close(both.features, plain.features)  # what the heads read: unchanged
    torch.testing.assert_close(both.pooling_boxes, plain.boxes)
    torch.testing.assert_close(both.boxes, stretched.boxes)  # where the boxes go: the stretched film's
    torch.testing.assert_close(both.scores, stretched.scores)
    assert not torch.allclose(stretched.features, plain.features)
