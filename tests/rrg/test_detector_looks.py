"""The detector's looks at a film (as loaded, stretched, mirrored) are built without full-size
three-channel copies (issue 20: peak memory on large real films), and must be exactly what
torchvision's own transform gives: the same numbers, bit for bit, so no report changes."""

import numpy as np
import pytest
import torch

from crrg.rrg.detector import (
    DetectorConfig,
    RegionDetector,
    contrast_bounds,
    mirror_keeps_sample,
    stretch_contrast,
    to_gray_tensor,
    to_rgb_tensor,
)

REAL_FILM_OPTIONS = {"contrast_percentiles": [1, 99], "contrast_boxes_only": True, "box_votes": 3,
                     "mirror_regions": ["right lung", "left lung"],
                     "box_calibration": {"right lung": [-0.08, -0.05, -0.14, 0.0]}, "region_descriptor_grid": 2}


def _detector(tiny_config, **options) -> RegionDetector:
    torch.manual_seed(0)
    return RegionDetector(DetectorConfig.from_dict({**tiny_config["detector"], **options})).eval()


def _film(height: int = 90, width: int = 70) -> np.ndarray:
    rng = np.random.default_rng(4)
    film = 0.3 + 0.3 * rng.random((height, width), dtype=np.float32)
    film[10:-10, 5:width // 2 - 3] += 0.3
    return film


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    """With one thread torch resizes a three-plane image in channels-last order, with more it does not:
    both must match."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("stretch, flip", [(False, False), (True, False), (True, True)])
def test_a_look_is_torchvisions_normalised_resized_film_bit_for_bit(tiny_config, threads, stretch, flip):
    det = _detector(tiny_config, contrast_percentiles=[1, 99])
    film = torch.from_numpy(_film(130, 97))
    reference = film.flip(-1) if flip else film
    reference = stretch_contrast(to_rgb_tensor(reference), (1.0, 99.0)) if stretch else to_rgb_tensor(reference)
    expected = det.frcnn.transform([reference])[0]
    for image in (to_gray_tensor(film), to_rgb_tensor(film)):
        look, size = det._look(image, stretch=stretch, flip=flip)
        assert size == (130, 97)
        h, w = expected.image_sizes[0]
        assert look.shape == (3, h, w)
        assert torch.equal(look, expected.tensors[0, :, :h, :w])


def test_a_gray_film_is_detected_exactly_like_its_three_channel_copy(tiny_config, threads):
    det = _detector(tiny_config, **REAL_FILM_OPTIONS)
    film = _film()
    gray, rgb = det.detect([to_gray_tensor(film)])[0], det.detect([to_rgb_tensor(film)])[0]
    for name in ("boxes", "scores", "features", "feature_boxes"):
        assert torch.equal(getattr(gray, name), getattr(rgb, name)), name
    # two films of different sizes in one call: each the same as alone
    other = _film(60, 80)
    both = det.detect([to_gray_tensor(film), to_gray_tensor(other)])
    alone = det.detect([to_gray_tensor(other)])[0]
    torch.testing.assert_close(both[0].boxes, gray.boxes)
    torch.testing.assert_close(both[1].boxes, alone.boxes)


def test_the_gray_tensor_shares_the_films_memory_and_detection_leaves_it_alone(tiny_config):
    film = _film()
    before = film.copy()
    tensor = to_gray_tensor(film)
    assert tensor.shape == (1, *film.shape) and np.shares_memory(tensor.numpy(), film)
    _detector(tiny_config, **REAL_FILM_OPTIONS).detect([tensor])
    assert np.array_equal(film, before)
    with pytest.raises(ValueError, match="grayscale"):
        to_gray_tensor(np.zeros((2, 3, 4), np.float32))


@pytest.mark.parametrize("width", [999, 1000, 1001, 1999, 2000, 2001, 2999, 3000, 3001])
def test_the_mirrored_film_reuses_the_contrast_bounds_only_where_they_are_the_same(width):
    """A large film's percentiles come from a regular subsample; where the flipped film's subsample is
    the same set of pixels, its bounds need no second quantile (and are the same numbers)."""
    rng = np.random.default_rng(width)
    film = torch.from_numpy(rng.random((1001, width), dtype=np.float32) ** 3)
    own, flipped = contrast_bounds(film, (1.0, 99.0)), contrast_bounds(film.flip(-1), (1.0, 99.0))
    if mirror_keeps_sample(width):
        assert own == flipped
    assert mirror_keeps_sample(width) == (own == flipped)


def test_contrast_bounds_and_stretch_agree_with_the_one_call_stretch():
    film = torch.from_numpy(_film())
    bounds = contrast_bounds(film, (1.0, 99.0))
    assert torch.equal(stretch_contrast(film, (1.0, 99.0), bounds), stretch_contrast(film, (1.0, 99.0)))
    assert contrast_bounds(film, None) is None
    assert contrast_bounds(torch.full((5, 5), 0.5), (1.0, 99.0)) is None
