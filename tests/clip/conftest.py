"""Tiny image-report fixtures: gray squares whose bright blobs match templated report sentences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crrg.records import ImageRef, StudyRecord, write_manifest

TINY_CLIP = "clip-tiny"


def _image(rng: np.random.Generator, effusion: bool, cardiomegaly: bool) -> np.ndarray:
    img = 0.2 + 0.05 * rng.standard_normal((64, 64))
    if effusion:
        img[44:, :24] += 0.6
    if cardiomegaly:
        img[20:44, 20:44] += 0.5
    return np.clip(img, 0, 1)


def _report(effusion: bool, cardiomegaly: bool) -> tuple[str, str]:
    findings = [
        "There is a pleural effusion." if effusion else "There is no pleural effusion.",
        "The heart is enlarged." if cardiomegaly else "The heart size is normal.",
        "No pneumothorax.",
    ]
    impression = "Abnormal chest." if (effusion or cardiomegaly) else "No acute cardiopulmonary abnormality."
    return " ".join(findings), impression


def make_dataset(root: Path, n: int = 24, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    records = []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        effusion, cardiomegaly = bool(i % 2), bool((i // 2) % 2)
        path = root / "images" / f"s{i}.png"
        Image.fromarray((_image(rng, effusion, cardiomegaly) * 255).astype(np.uint8)).save(path)
        findings, impression = _report(effusion, cardiomegaly)
        labels = {"Pleural Effusion": int(effusion), "Cardiomegaly": int(cardiomegaly), "Pneumothorax": 0,
                  "No Finding": int(not (effusion or cardiomegaly))}
        split = "train" if i < n * 2 // 3 else ("val" if i < n * 5 // 6 else "test")
        records.append(StudyRecord(id=f"s{i}", images=[ImageRef(f"images/s{i}.png", "PA")], findings=findings,
                                   impression=impression, labels=_full(labels), split=split))
    manifest = root / "manifest.jsonl"
    write_manifest(manifest, records)
    return manifest


def _full(labels: dict) -> dict:
    from crrg.records import empty_labels

    out = empty_labels()
    out.update(labels)
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("clipdata"))


@pytest.fixture(scope="session")
def saved_tiny_clip(tmp_path_factory, tiny_data) -> Path:
    """An untrained tiny CLIP model with a retrieval index of the fixture's training reports."""
    import torch

    from crrg.clip.retrieval import build_index
    from crrg.models import create_model, save_pretrained
    from crrg.records import read_manifest

    torch.manual_seed(0)
    model = create_model(TINY_CLIP).eval()
    model.retrieval = build_index(model, read_manifest(tiny_data, split="train"))
    return save_pretrained(model, tmp_path_factory.mktemp("tinyclip") / "model")


@pytest.fixture(scope="session")
def saved_tiny_classifier(tmp_path_factory) -> Path:
    import torch

    from crrg.models import create_model, save_pretrained

    torch.manual_seed(0)
    model = create_model("classifier-resnet18", labels=["Pleural Effusion", "Cardiomegaly"], image_encoder={"image_size": 64})
    model.thresholds = {"Pleural Effusion": 0.25, "Cardiomegaly": 0.75}
    return save_pretrained(model, tmp_path_factory.mktemp("tinyclf") / "model")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """On a shared, loaded 2-core machine two intra-op threads run ~9x slower than one (spin-waiting)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
