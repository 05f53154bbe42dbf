"""Shared test fixtures.

``shared_data`` points at ``../shared/data`` (or $CRRG_SHARED_DATA); tests that need it are skipped
where it is absent, so the suite also passes on a bare clone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("CRRG_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One torch thread: the tests use tiny models, and on a 2-core CI machine two spinning intra-op
    threads made single steps 10-15x slower (measured in the CLIP and rrg tests)."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where CUDA exists (a lent GPU machine); elsewhere they are skipped
    with the reason shown, so the CPU CI lane stays green and the GPU lane needs no flags."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
