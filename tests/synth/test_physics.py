"""Findings change the image where and how radiology says they should (coarse phantom, 128 px)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from crrg.observations import ANATOMICAL_REGIONS
from crrg.synth.findings import Finding, Inserter
from crrg.synth.render import Acquisition


def _render(renderer, findings, view="PA", seed=0):
    ins = Inserter(renderer.anatomy).insert(findings, np.random.default_rng(seed))
    acq = Acquisition(noise=0.0, blur=0.0, marker=False, seed=1)
    return renderer.render_view(view, 0, ins, acq)


def _crop(img, box):
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return img[y0:y1, x0:x1]


def test_normal_phantom_has_normal_heart_size(renderer):
    _, boxes, ctr = _render(renderer, [])
    assert ctr < 0.5
    assert set(boxes) == set(ANATOMICAL_REGIONS)


def test_cardiomegaly_widens_cardiac_silhouette_box(renderer):
    _, normal, ctr0 = _render(renderer, [])
    scale = 0.6 / renderer.base_ctr()
    _, big, ctr1 = _render(renderer, [Finding("cardiomegaly", "moderate", params={"scale": scale})])
    w0 = normal["cardiac silhouette"][2] - normal["cardiac silhouette"][0]
    w1 = big["cardiac silhouette"][2] - big["cardiac silhouette"][0]
    assert w1 > w0 * 1.15
    assert ctr1 > 0.5 > ctr0


def test_effusion_raises_intensity_at_costophrenic_angle(renderer):
    base, boxes, _ = _render(renderer, [])
    wet, _, _ = _render(renderer, [Finding("effusion", "moderate", "right")])
    right = boxes["right costophrenic angle"]
    left = boxes["left costophrenic angle"]
    assert _crop(wet, right).mean() > _crop(base, right).mean() + 0.03
    assert abs(_crop(wet, left).mean() - _crop(base, left).mean()) < 0.02  # the other side is untouched


def test_pneumothorax_side_has_fewer_lung_markings(renderer):
    base, boxes, _ = _render(renderer, [])
    ptx, _, _ = _render(renderer, [Finding("pneumothorax", "large", "left")])
    # where the lung fell away (darker than before), away from the pleural line
    air = ndimage.binary_erosion((ptx - base) < -0.03, iterations=2)
    x0, y0, x1, y1 = (int(v) for v in boxes["left lung"])
    inside = np.zeros_like(air)
    inside[y0:y1, x0:x1] = True
    air &= inside
    assert air.sum() > 30
    right = np.zeros_like(air)
    rx0, ry0, rx1, ry1 = (int(v) for v in boxes["right lung"])
    right[ry0:ry1, rx0:rx1] = True
    assert not (air & right).any()  # only the affected side changes

    def hf_energy(img, mask):
        detail = img.astype(np.float64) - ndimage.gaussian_filter(img.astype(np.float64), 1.5)
        return float(np.mean(detail[mask] ** 2))

    assert hf_energy(ptx, air) < 0.85 * hf_energy(base, air)  # ribs stay; the vessels go


def test_nodule_is_brighter_than_surroundings(renderer):
    f = Finding("mass", "", "right", "right mid lung zone", {"size_mm": 45})
    base, _, _ = _render(renderer, [])
    img, _, _ = _render(renderer, [f], seed=3)
    assert (img - base).max() > 0.15


def test_devices_show_up_on_both_views(renderer):
    f = Finding("devices", params={"kinds": ["pacemaker", "ett"]})
    for view in ("PA", "LATERAL"):
        base, _, _ = _render(renderer, [], view)
        img, _, _ = _render(renderer, [f], view)
        assert (img - base).max() > 0.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boxes_lie_inside_the_image_under_random_acquisitions(renderer, seed):
    from crrg.synth.sampling import sample_findings

    rng = np.random.default_rng(seed)
    findings = sample_findings(rng, renderer.base_ctr())
    ins = Inserter(renderer.anatomy).insert(findings, rng)
    acq = Acquisition(angle=3.0, shift=(0.03, -0.03), scale=(1.1, 0.95), inspiration=1.06, elastic=0.012, seed=seed)
    img, boxes, _ = renderer.render_view("AP", 1, ins, acq, "R")
    n = img.shape[0]
    assert img.shape == (n, n) and 0.0 <= img.min() and img.max() <= 1.0
    for name, (x0, y0, x1, y1) in boxes.items():
        assert 0 <= x0 < x1 <= n and 0 <= y0 < y1 <= n, name
