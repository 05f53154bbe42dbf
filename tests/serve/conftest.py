from __future__ import annotations

import pytest

from tests.serve.serve_helpers import EchoGenerator


@pytest.fixture
def echo() -> EchoGenerator:
    return EchoGenerator()
