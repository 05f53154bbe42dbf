"""Synthetic-to-real augmentation: shape and range kept, each lever changes the film, a seed repeats it."""

from __future__ import annotations

import numpy as np
import pytest

from crrg.errors import ConfigError
from crrg.image.realism import LEVERS, RealismAugment, RealismConfig, StyleBank


@pytest.fixture(scope="module")
def film() -> np.ndarray:
    """A crude frontal film: bright body, two dark lungs, a bright heart, a bright spine."""
    yy, xx = np.mgrid[0:96, 0:80].astype(np.float32)
    image = np.full((96, 80), 0.15, np.float32)
    body = ((xx - 40) / 36) ** 2 + ((yy - 50) / 46) ** 2 < 1
    image[body] = 0.7
    for cx in (24, 56):
        image[((xx - cx) / 12) ** 2 + ((yy - 45) / 28) ** 2 < 1] = 0.2
    image[((xx - 45) / 14) ** 2 + ((yy - 65) / 12) ** 2 < 1] = 0.8
    image[:, 38:42] = 0.9
    return np.kron(image, np.ones((2, 2), np.float32))  # 192 x 160: the size range the levers are scaled for


@pytest.fixture(scope="module")
def bank() -> StyleBank:
    rng = np.random.default_rng(1)
    return StyleBank.from_images([rng.beta(2, 2, size=(32, 32)).astype(np.float32) for _ in range(3)])


@pytest.mark.parametrize("lever", LEVERS)
def test_each_lever_keeps_shape_and_range_and_changes_the_film(lever, film, bank):
    augment = RealismAugment(RealismConfig.only(lever), style_bank=bank)
    out = augment(film, np.random.default_rng(3))
    assert out.shape == film.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert np.abs(out - film).mean() > 1e-4, f"{lever} left the film unchanged"


def test_a_seed_repeats_the_augmentation_and_another_seed_differs(film, bank):
    augment = RealismAugment(RealismConfig(style=0.5), style_bank=bank)
    a = augment(film, np.random.default_rng(7))
    assert np.array_equal(a, augment(film, np.random.default_rng(7)))
    assert not np.array_equal(a, augment(film, np.random.default_rng(8)))
    assert np.array_equal(film, film.copy())  # the input is not modified in place


def test_all_levers_off_is_the_identity(film):
    out = RealismAugment(RealismConfig.only())(film, np.random.default_rng(0))
    assert np.array_equal(out, film)


def test_resolution_loss_removes_fine_detail(film):
    noisy = np.clip(film + np.random.default_rng(0).normal(0, 0.05, film.shape), 0, 1).astype(np.float32)
    cfg = RealismConfig.only("resolution", resolution_px=(16, 16))
    out = RealismAugment(cfg)(noisy, np.random.default_rng(0))
    assert np.abs(np.diff(out, axis=1)).mean() < 0.5 * np.abs(np.diff(noisy, axis=1)).mean()


def test_style_moves_the_histogram_towards_the_real_films(film, bank):
    cfg = RealismConfig.only("style", style_mix=(1.0, 1.0))
    out = RealismAugment(cfg, style_bank=bank)(film, np.random.default_rng(0))
    target = np.median(bank.quantiles, axis=0)[128]
    assert abs(np.median(out) - target) < abs(np.median(film) - target)


def test_config_errors():
    with pytest.raises(ConfigError, match="probability"):
        RealismConfig.from_dict({"noise": 2.0})
    with pytest.raises(ConfigError, match="unknown"):
        RealismConfig.only("grid_lines")
    with pytest.raises(ConfigError, match="StyleBank"):
        RealismAugment(RealismConfig(style=0.5))
    with pytest.raises(ConfigError):
        RealismConfig.from_dict({"nosie": 0.5})
    assert RealismConfig.from_dict({"gamma": [0.8, 1.2]}).gamma == (0.8, 1.2)
