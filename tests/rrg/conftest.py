"""Tiny region-annotated studies and a tiny rrg config, so every rrg test runs in seconds on a CPU."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from crrg.observations import ANATOMICAL_REGIONS, CHEXPERT_14
from crrg.records import ImageRef, Region, StudyRecord, write_manifest

TINY_CONFIG = {
    "family": "rrg",
    "detector": {"backbone": "mobilenet_v3_large_fpn", "image_size": 64, "anchor_sizes": [8, 16, 32, 64],
                 "rpn_pre_nms_top_n_test": 60, "rpn_post_nms_top_n_test": 40,
                 "rpn_pre_nms_top_n_train": 60, "rpn_post_nms_top_n_train": 40, "box_batch_size_per_image": 64,
                 "representation_size": 64},
    "feature_width": 32,
    "heads": {"region_hidden": 16, "finding_hidden": 16},
    "language": {"vocab_size": 400, "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 48,
                 "prefix_length": 2, "max_new_tokens": 12},
    "assembly": {"embedder": False},
}

NORMAL = "the {r} is normal"
ABNORMAL = "there is an opacity in the {r}"


def make_studies(folder: Path, n: int = 6, size: int = 64, seed: int = 0) -> Path:
    """``n`` studies (frontal + lateral PNG) with 29 boxes each; a bright square marks abnormal regions."""
    from PIL import Image

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        pixels = np.full((size, size), 40, np.uint8)
        regions = []
        abnormal_any = False
        for k, name in enumerate(ANATOMICAL_REGIONS):
            x1, y1 = rng.randint(0, size // 2), rng.randint(0, size // 2)
            x2, y2 = x1 + rng.randint(8, size // 2), y1 + rng.randint(8, size // 2)
            abnormal = k in (2, 10) and i % 2 == 1
            abnormal_any |= abnormal
            if abnormal:
                pixels[y1:y2, x1:x2] = 230
            sentences = [(ABNORMAL if abnormal else NORMAL).format(r=name)] if k in (0, 2, 10, 24) else []
            regions.append(Region(name=name, image=0, box=[float(x1), float(y1), float(x2), float(y2)],
                                  abnormal=abnormal, sentences=sentences))
        Image.fromarray(pixels).save(folder / f"s{i}_pa.png")
        Image.fromarray(pixels[:, ::-1].copy()).save(folder / f"s{i}_lat.png")
        labels = {name: None for name in CHEXPERT_14}
        labels["Lung Opacity" if abnormal_any else "No Finding"] = 1
        findings = " ".join(s + "." for r in regions for s in r.sentences)
        records.append(StudyRecord(id=f"s{i}", images=[ImageRef(f"s{i}_pa.png", "PA"), ImageRef(f"s{i}_lat.png", "LATERAL")],
                                   findings=findings, impression="opacity." if abnormal_any else "normal.",
                                   labels=labels, split="train" if i < n - 2 else "val", regions=regions))
    manifest = folder / "manifest.jsonl"
    write_manifest(manifest, records)
    return manifest


@pytest.fixture()
def tiny_manifest(tmp_path: Path) -> Path:
    return make_studies(tmp_path / "data")


@pytest.fixture()
def tiny_config() -> dict:
    import copy

    return copy.deepcopy(TINY_CONFIG)


def untrained_model(config: dict | None = None, select_all: bool = True):
    """A tiny rrg model with a real tokenizer but random weights; selection forced on for every region."""
    import copy

    import torch

    from crrg.models.registry import build_model
    from crrg.rrg.language import special_ids, train_tokenizer

    torch.manual_seed(0)
    cfg = copy.deepcopy(config or TINY_CONFIG)
    texts = [t.format(r=name) for name in ANATOMICAL_REGIONS for t in (NORMAL, ABNORMAL)]
    tokenizer = train_tokenizer(texts, vocab_size=cfg["language"]["vocab_size"])
    cfg["special_ids"] = special_ids(tokenizer)
    if select_all:
        cfg["thresholds"] = {"selection": 0.0, "abnormal": 0.5}
    model = build_model(cfg).eval()
    model.tokenizer = tokenizer
    return model


@pytest.fixture(scope="session")
def saved_tiny_model(tmp_path_factory) -> Path:
    from crrg.models.registry import save_pretrained

    folder = tmp_path_factory.mktemp("rrg_model")
    save_pretrained(untrained_model(), folder)
    return folder


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread for these tiny models: on a loaded 2-core machine two threads made a
    detector step 15x slower (spin-waiting threads), with nothing to gain at 64 px."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
