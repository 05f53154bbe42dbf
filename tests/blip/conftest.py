"""Tiny ClinicalBLIP pieces shared by the blip tests: a report LM trained in seconds and a small config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPORTS = [
    "The heart is normal in size. The lungs are clear. Impression: No acute cardiopulmonary disease.",
    "The heart is enlarged. Small right pleural effusion. Impression: Cardiomegaly and small effusion.",
    "No pneumothorax. Mild atelectasis at the left base. Impression: Left basilar atelectasis.",
    "Clear lungs without focal consolidation. Impression: Normal chest.",
] * 4


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    from crrg.blip.language_model import LmPretrainConfig, pretrain_report_lm

    out = tmp_path_factory.mktemp("blip_lm") / "lm"
    config = LmPretrainConfig(vocab_size=300, n_layer=1, n_embd=32, n_head=2, n_positions=160, epochs=1, batch_size=8)
    return pretrain_report_lm(REPORTS, out, config)


# The architecture keys of a tiny ClinicalBLIP (model.overrides of a training config).
TINY_OVERRIDES = {
    "image_size": 32,
    "vision": {"type": "vit", "hidden_size": 32, "layers": 1, "heads": 2, "patch_size": 16, "intermediate_size": 64},
    "qformer": {"hidden_size": 32, "layers": 2, "heads": 2, "num_query_tokens": 4, "dropout": 0.0},
    "soft_prompt_tokens": 2,
    "generation": {"max_new_tokens": 8},
}


@pytest.fixture()
def tiny_config(tiny_lm) -> dict:
    import copy

    return {"family": "blip", "name": "blip-test", **copy.deepcopy(TINY_OVERRIDES), "lm": {"pretrained": str(tiny_lm)},
            "lora": {"vision": {"r": 2, "dropout": 0.0}}}


def write_tiny_manifest(folder: Path, n: int = 6) -> Path:
    """``n`` studies (PA + lateral noise images, REPORTS texts); two thirds train, the rest val."""
    from PIL import Image

    from crrg.records import ImageRef, StudyRecord, write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        paths = []
        for view in ("PA", "LATERAL"):
            name = f"s{i}_{view}.png"
            Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(folder / name)
            paths.append(ImageRef(path=name, view=view))
        findings, _, impression = REPORTS[i % 4].partition(" Impression: ")
        labels = {"Cardiomegaly": 1 if "enlarged" in findings else 0}
        records.append(StudyRecord(id=f"s{i}", images=paths, findings=findings, impression=impression,
                                   indication="cough", labels={**StudyRecord(id="x").labels, **labels},
                                   split="train" if i < n * 2 // 3 else "val"))
    path = folder / "m.jsonl"
    write_manifest(path, records)
    return path


def random_image(seed: int, shape=(40, 36)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)
