"""Saved tiny generators of each family, for the generation-layer tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def saved_rrg(tmp_path_factory) -> Path:
    from crrg.models.registry import save_pretrained
    from tests.rrg.conftest import untrained_model

    return save_pretrained(untrained_model(), tmp_path_factory.mktemp("gen_rrg") / "model")


@pytest.fixture(scope="session")
def tiny_lm_folder(tmp_path_factory) -> Path:
    """A GPT-2 of one layer and its tokenizer, trained in seconds: the local stand-in of a hub LM."""
    from crrg.blip.language_model import LmPretrainConfig, pretrain_report_lm
    from tests.blip.conftest import REPORTS

    out = tmp_path_factory.mktemp("gen_lm") / "lm"
    config = LmPretrainConfig(vocab_size=300, n_layer=1, n_embd=32, n_head=2, n_positions=160, epochs=1, batch_size=8)
    return pretrain_report_lm(REPORTS, out, config)
