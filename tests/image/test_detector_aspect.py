"""Issue 23 item 7: an image of extreme aspect ratio must not crash the region detector (the gate
refuses such images at the edge; the detector must still survive one given with the gate off)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crrg.rrg.detector import NUM_REGIONS, DetectorConfig, RegionDetector, to_rgb_tensor


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return RegionDetector(DetectorConfig(image_size=64)).eval()


@pytest.mark.parametrize("shape", [(10, 4000), (4000, 10), (1, 600), (600, 1), (64, 64)])
def test_detector_survives_extreme_aspect_ratios(detector, shape):
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    det = detector.detect([to_rgb_tensor(image)])[0]
    h, w = shape
    assert det.boxes.shape == (NUM_REGIONS, 4) and torch.isfinite(det.boxes).all()
    assert (det.boxes[:, 0] >= 0).all() and (det.boxes[:, 2] <= w).all()
    assert (det.boxes[:, 1] >= 0).all() and (det.boxes[:, 3] <= h).all()
    assert (det.boxes[:, 2] > det.boxes[:, 0]).all() and (det.boxes[:, 3] > det.boxes[:, 1]).all()
