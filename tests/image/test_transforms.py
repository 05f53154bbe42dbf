"""Transforms keep boxes on the same anatomy, forward and back."""

from __future__ import annotations

import numpy as np
import pytest

from crrg.errors import InputError
from crrg.image import Affine, Preprocess, center_crop, clip_boxes, crop, letterbox, resize, to_tensor


def image_with_bright_box(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    image = np.zeros((height, width), np.float32)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 1.0
    return image


def bright_extent(image: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    ys, xs = np.nonzero(image > threshold)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (256, 256), (1000, 37)])
def test_letterbox_square_keeps_aspect_and_maps_boxes(shape):
    h, w = shape
    box = (w // 4, h // 3, w // 2, h // 2 + h // 8)
    image = image_with_bright_box(h, w, box)
    out, geometry = letterbox(image, 128)
    assert out.shape == (128, 128) and out.dtype == np.float32
    mapped = geometry.boxes([box])[0]
    # The bright block lands where the mapped box says, within a resampling pixel.
    np.testing.assert_allclose(bright_extent(out), mapped, atol=1.01)
    # Aspect kept: each side is the exact scaled length rounded to a whole pixel.
    scale = 128 / max(h, w)
    assert abs(geometry.sx * w - scale * w) <= 0.5 and abs(geometry.sy * h - scale * h) <= 0.5
    # Padding is centred and black.
    content = geometry.boxes([[0, 0, w, h]])[0]
    assert content[0] == pytest.approx(128 - content[2], abs=1) and content[1] == pytest.approx(128 - content[3], abs=1)
    if content[0] >= 1:
        assert out[:, : int(content[0])].max() == 0.0


def test_boxes_round_trip_through_letterbox_and_crop():
    rng = np.random.default_rng(0)
    boxes = np.sort(rng.uniform(0, 400, size=(20, 2, 2)), axis=1).transpose(0, 2, 1).reshape(20, 4)
    boxes = boxes[:, [0, 2, 1, 3]]  # [x1, y1, x2, y2] with x1 <= x2, y1 <= y2
    image = np.zeros((400, 300), np.float32)
    cropped, g1 = crop(image, (10, 20, 290, 390))
    _, g2 = letterbox(cropped, 224)
    chain = g1.then(g2)
    np.testing.assert_allclose(chain.inverse_boxes(chain.boxes(boxes)), boxes, atol=1e-9)
    # The composition equals applying the two steps one after the other.
    np.testing.assert_allclose(chain.boxes(boxes), g2.boxes(g1.boxes(boxes)), atol=1e-9)


def test_model_output_boxes_map_back_to_original_pixels():
    h, w = 600, 400
    truth = (100, 250, 180, 420)
    image = image_with_bright_box(h, w, truth)
    out, geometry = letterbox(image, 200)
    detected = bright_extent(out)  # a perfect "detector" on the model input
    back = geometry.inverse_boxes([detected])[0]
    np.testing.assert_allclose(back, truth, atol=1.0 / geometry.sx + 1e-6)


def test_resize_exact_size():
    image = image_with_bright_box(100, 50, (10, 10, 40, 60))
    out, geometry = resize(image, 64, 64)
    assert out.shape == (64, 64)
    assert geometry == Affine(64 / 50, 64 / 100, 0.0, 0.0)
    np.testing.assert_allclose(bright_extent(out), geometry.boxes([[10, 10, 40, 60]])[0], atol=1.01)


def test_resize_preserves_range_and_mean():
    rng = np.random.default_rng(1)
    image = rng.random((257, 311)).astype(np.float32)
    out, _ = resize(image, 128, 128)
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out.mean() == pytest.approx(image.mean(), abs=0.01)


def test_crop_and_clip():
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    out, geometry = crop(image, (2, 3, 7, 8))
    np.testing.assert_array_equal(out, image[3:8, 2:7])
    np.testing.assert_allclose(geometry.boxes([[2, 3, 7, 8]]), [[0, 0, 5, 5]])
    np.testing.assert_allclose(clip_boxes(geometry.boxes([[0, 0, 10, 10]]), 5, 5), [[0, 0, 5, 5]])
    with pytest.raises(InputError, match="does not overlap"):
        crop(image, (20, 20, 30, 30))
    out, g = center_crop(image, 4, 6)
    assert out.shape == (4, 6) and g.dx == -2 and g.dy == -3


def test_bad_inputs_are_input_errors():
    with pytest.raises(InputError, match="2-D gray"):
        letterbox(np.zeros((4, 4, 3), np.float32), 8)
    with pytest.raises(InputError, match=r"\(N, 4\)"):
        Affine().boxes([[1, 2, 3]])
    assert Affine().boxes([]).shape == (0, 4)


def test_to_tensor_and_preprocess():
    image = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    t = to_tensor(image)
    assert tuple(t.shape) == (1, 3, 4) and str(t.dtype) == "torch.float32"
    np.testing.assert_allclose(t.numpy()[0], image)
    s = to_tensor(image, mean=0.5, std=0.5)
    assert float(s.min()) == pytest.approx(-1.0) and float(s.max()) == pytest.approx(1.0)
    with pytest.raises(InputError, match="std"):
        to_tensor(image, mean=0.5, std=0.0)
    tensor, geometry = Preprocess(size=16, mean=0.5, std=0.5)(np.ones((8, 4), np.float32))
    assert tuple(tensor.shape) == (1, 16, 16)
    np.testing.assert_allclose(geometry.boxes([[0, 0, 4, 8]]), [[4, 0, 12, 16]])
