"""The model shipped in the package (crrg-default): small enough to ship, and writes a report offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crrg.models.registry import DEFAULT_MODEL, bundled_models_dir, list_bundled_models, load_pretrained, save_pretrained
from crrg.reporting import StudyInput

ROOT = Path(__file__).resolve().parents[2]
LIMIT_BYTES = 50 * 2**20  # generator 23 MB + its attached CLIP classifier 22 MB (float16)


def test_default_model_is_bundled_small_and_versioned():
    import json

    assert DEFAULT_MODEL in list_bundled_models()
    folder = bundled_models_dir() / DEFAULT_MODEL
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= LIMIT_BYTES, f"{folder} is {size / 2**20:.1f} MB"
    version = json.loads((folder / "config.json").read_text())["version"]
    assert version == "0.10.0"
    card = (folder / "MODEL_CARD.md").read_text()
    assert card.startswith(f"# crrg-default {version}:"), "the model card describes another version"
    assert "NOT FOR CLINICAL USE" in card


def test_default_model_reports_on_a_frontal_and_lateral_study():
    from crrg.image import load_image

    model = load_pretrained(DEFAULT_MODEL)
    study = StudyInput(images=[load_image(ROOT / "examples" / "normal_frontal.png"),
                               load_image(ROOT / "examples" / "normal_lateral.png")], views=["PA", "LATERAL"])
    report = model.generate_report(study)
    assert len(report.regions) == 29
    assert report.findings.strip() and report.impression.strip()
    assert set(report.probabilities) and all(0 <= p <= 1 for p in report.probabilities.values())


def test_float16_weights_load_into_float32_with_the_same_outputs(tmp_path):
    from safetensors import safe_open

    from tests.rrg.conftest import untrained_model

    model = untrained_model()
    save_pretrained(model, tmp_path / "half", dtype=torch.float16)
    with safe_open(str(tmp_path / "half" / "model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    half = load_pretrained(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in half.parameters())
    feats = torch.randn(2, 29, model.detector.feature_size)
    with torch.no_grad():
        a = model.heads(model.region_features(feats))["findings"]
        b = half.heads(half.region_features(feats))["findings"]
    assert torch.allclose(a, b, atol=2e-2)
    assert not torch.equal(a, b)  # the copy really went through float16
