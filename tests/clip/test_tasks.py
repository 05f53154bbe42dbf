"""End-to-end training through the engine: `crrg train clip` and `crrg train classifier` on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from crrg.training.config import load_config, set_in

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained_clip(tmp_path_factory, tiny_data) -> Path:
    from crrg.training.engine import train

    cfg = set_in(load_config(REPO / "configs/clip/tiny.yaml"), "data.manifest", str(tiny_data))
    return train("clip", cfg, tmp_path_factory.mktemp("run") / "clip", progress_bar=False)


def test_train_clip_exports_a_loadable_model_with_index_and_thresholds(trained_clip, tiny_data):
    from crrg.models import load_pretrained
    from crrg.records import read_manifest

    model = load_pretrained(trained_clip)
    assert model.retrieval is not None and len(model.retrieval) == len(read_manifest(tiny_data, split="train"))
    thresholds = json.loads((trained_clip / "thresholds.json").read_text())
    assert model.thresholds == thresholds and "Pleural Effusion" in thresholds
    assert thresholds["Pleural Effusion"] != 0.5  # chosen on the labelled val split, not the default
    metrics = (trained_clip.parent / "logs" / "csv" / "metrics.csv").read_text()
    assert "train_loss" in metrics and "val_loss" in metrics


def _image_folder(root: Path, n: int, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, name in enumerate(("0_normal", "1_abnormal")):
        (root / name).mkdir(parents=True)
        for i in range(n):
            img = 0.3 + 0.05 * rng.standard_normal((32, 32))
            if k:
                img[8:24, 8:24] += 0.5
            Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_train_classifier_finetune_on_image_folder_learns_and_stores_thresholds(tmp_path, trained_clip):
    from crrg.models import load_pretrained
    from crrg.training.engine import train

    data = tmp_path / "folders"
    _image_folder(data / "train", 12, 0)
    _image_folder(data / "valid", 6, 1)
    cfg = load_config(REPO / "configs/classifier/finetune.yaml", [
        f"model.from_clip={trained_clip}", "trainer.max_epochs=null", "trainer.max_steps=12",
        "trainer.batch_size=8", "trainer.monitor=null", "model.overrides.image_encoder.image_size=32"])
    cfg = set_in(cfg, "data.manifest", str(data))
    out = train("classifier", cfg, tmp_path / "clf", progress_bar=False)
    model = load_pretrained(out)
    assert model.labels == ["abnormal"] and model.image_size == 32
    assert set(json.loads((out / "thresholds.json").read_text())) == {"abnormal"}
    from crrg.clip.data import read_image_folder
    from crrg.clip.classifier_task import predict_items

    items, _ = read_image_folder(data / "valid")
    scores = predict_items(model, items)[:, 0]
    truth = np.array([it.target[0] for it in items])
    assert scores[truth == 1].mean() > scores[truth == 0].mean()  # the blob is learnt


def test_linear_probe_keeps_the_clip_tower_frozen(tiny_data, trained_clip):
    import torch

    from crrg.clip.classifier_task import ClassifierModule
    from crrg.models import load_pretrained

    cfg = load_config(REPO / "configs/classifier/linear-probe.yaml", [f"model.from_clip={trained_clip}", "model.labels=[Cardiomegaly]"])
    module = ClassifierModule(cfg, ["Cardiomegaly"])
    clip = load_pretrained(trained_clip)
    for (name, a), b in zip(module.model.image_encoder.state_dict().items(), clip.image_encoder.state_dict().values()):
        assert torch.equal(a, b), name
    assert not any(p.requires_grad for p in module.model.image_encoder.parameters())
    assert all(p.requires_grad for p in module.model.head.parameters())


def test_freeze_text_layers_freezes_embeddings_and_lowest_layers():
    from crrg.clip.task import ClipModule

    cfg = load_config(REPO / "configs/clip/tiny.yaml", ["model.freeze_text_layers=1"])
    module = ClipModule(cfg)
    hf = module.model.text_encoder.model
    assert not any(p.requires_grad for p in hf.embeddings.parameters())
    assert not any(p.requires_grad for p in hf.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in hf.encoder.layer[1].parameters())
    optimizer = module.configure_optimizers()["optimizer"]
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert all(id(p) not in in_optimizer for p in hf.embeddings.parameters())


def test_locked_text_tower_is_cached_and_matches_the_uncached_forward():
    from crrg.clip.task import ClipModule

    cfg = load_config(REPO / "configs/clip/tiny.yaml", ["model.freeze_text_layers=-1"])
    module = ClipModule(cfg)
    assert module.locked_text is not None
    assert not any(p.requires_grad for p in module.model.text_encoder.parameters())
    module.model.eval()  # dropout off, as the cache computes its features
    torch.manual_seed(0)
    batch = {"image": torch.rand(3, 1, 32, 32), "text": ["Heart is enlarged.", "No effusion.", "Heart is enlarged."]}
    plain = module.model(batch["image"], batch["text"])
    module.model.train()
    module.model.image_encoder.eval()
    cached = module._forward(batch)
    assert len(module.locked_text.cache) == 2  # one entry per distinct text
    torch.testing.assert_close(cached["text_emb"], plain["text_emb"], atol=1e-5, rtol=1e-5)
    assert module.model.text_encoder.training  # the cache restores the tower's mode
    cached["loss"].backward()
    assert module.model.text_projection.weight.grad is not None  # the projection still learns


def test_temperature_has_no_weight_decay():
    from crrg.clip.task import ClipModule

    module = ClipModule(load_config(REPO / "configs/clip/tiny.yaml", ["trainer.weight_decay=0.1"]))
    groups = module.configure_optimizers()["optimizer"].param_groups
    (temperature_group,) = [g for g in groups if any(p is module.model.logit_scale for p in g["params"])]
    assert temperature_group["weight_decay"] == 0.0 and len(temperature_group["params"]) == 1
    assert any(g["weight_decay"] == 0.1 for g in groups)


def test_linear_probe_computes_each_images_features_once_and_matches_the_full_model(tiny_data, trained_clip):
    import torch

    from crrg.clip.classifier_task import ClassifierDataModule, ClassifierModule
    from crrg.clip.data import load_image

    cfg = load_config(REPO / "configs/classifier/linear-probe.yaml",
                      [f"model.from_clip={trained_clip}", "model.labels=[Cardiomegaly]", "data.image_augment=false"])
    cfg = set_in(cfg, "data.manifest", str(tiny_data))
    module = ClassifierModule(cfg, ["Cardiomegaly"])
    data = ClassifierDataModule(cfg, module.model.image_size)
    data.setup()
    assert "image" not in data.train_set[0]  # a cached tower needs no pixels
    paths = [data.train_set[i]["path"] for i in range(3)]
    calls = []
    module.model.image_encoder.register_forward_hook(lambda mod, inp, out: calls.append(len(inp[0])))
    batch = {"path": paths, "target": torch.tensor([[1.0], [0.0], [1.0]]), "mask": torch.ones(3, 1)}
    module.train()
    first = module._loss(batch)[1]
    second = module._loss(batch)[1]
    assert calls == [3]  # computed once, then read from the cache
    assert torch.allclose(first, second)
    module.model.eval()
    with torch.no_grad():
        full = module.model(module.model.preprocess([load_image(p) for p in paths]))
    assert torch.allclose(first, full, atol=1e-5)


def test_locked_image_tower_caches_one_feature_per_image_and_only_projections_learn(tiny_data):
    from crrg.clip.data import load_image, primary_image
    from crrg.clip.task import ClipDataModule, ClipModule
    from crrg.records import read_manifest

    cfg = load_config(REPO / "configs/clip/tiny.yaml", ["model.freeze_text_layers=-1", "model.freeze_image_tower=true",
                                                        "data.image_augment=false"])
    cfg = set_in(cfg, "data.manifest", str(tiny_data))
    module = ClipModule(cfg)
    assert not any(p.requires_grad for p in module.model.image_encoder.parameters())
    data = ClipDataModule(cfg, module.model.image_size)
    data.setup()
    item = data.train_set[0]
    assert item["image"] is None and item["path"]  # pixels are not decoded for a cached tower
    calls = []
    module.model.image_encoder.register_forward_hook(lambda mod, inp, out: calls.append(len(inp[0])))
    paths = [primary_image(r) for r in read_manifest(tiny_data, split="train")][:3]
    batch = {"image": None, "path": paths + paths[:1], "text": ["Heart is enlarged.", "No effusion.", "Clear.", "Clear."]}
    module.train()
    out = module._forward(batch)
    module._forward(batch)
    assert calls == [3] and module.model.image_encoder.training  # each image once; the tower's mode restored
    module.model.eval()
    with torch.no_grad():
        plain = module.model.encode_image(module.model.preprocess([load_image(p) for p in paths]))
    torch.testing.assert_close(out["image_emb"][:3].detach(), plain, atol=1e-5, rtol=1e-5)
    out["loss"].backward()
    assert module.model.image_projection.weight.grad is not None


def test_locked_image_tower_refuses_image_augmentation(tiny_data):
    from crrg.clip.task import ClipDataModule
    from crrg.errors import ConfigError

    cfg = load_config(REPO / "configs/clip/tiny.yaml", ["model.freeze_image_tower=true", "data.image_augment=true"])
    cfg = set_in(cfg, "data.manifest", str(tiny_data))
    with pytest.raises(ConfigError, match="image_augment: false"):
        ClipDataModule(cfg, 32).setup()
