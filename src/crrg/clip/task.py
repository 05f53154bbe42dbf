"""`crrg train clip`: contrastive pretraining on image-report pairs, plugged into the training engine.

Config sections (see configs/clip/*.yaml)::

    model:   {name: clip-resnet18-minilm, pretrained: null, overrides: {...}, text_lr_scale: 0.1,
              image_encoder_from: null, freeze_text_layers: 0, freeze_image_tower: false}
    data:    {manifest: M.jsonl, train_split: train, val_split: val, section: both,
              image_augment: true, text_augment: true}
    export:  {index_train_reports: true, choose_thresholds: true, prompts: null, unknown: ignore}
    trainer: {...}   (the engine's)

The pretrained text encoder gets a smaller learning rate (``text_lr_scale``) than the image tower
trained from scratch, so contrastive training does not wash out what MiniLM already knows.
On export the model is saved with a retrieval index of the training reports (so it can serve as
a report-generation baseline) and with zero-shot thresholds chosen on the validation split where
it has labels.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from crrg.clip.data import ImageAugment, ImageTextDataset, TextAugment, collate_pairs, label_targets, load_image, primary_image
from crrg.errors import ConfigError, InputError
from crrg.records import StudyRecord, read_manifest
from crrg.training.config import config_section

log = logging.getLogger(__name__)


_section = config_section  # the shared reader of a config section


def image_tower_locked(config: dict) -> bool:
    return bool(_section(config, "model").get("freeze_image_tower", False))


def build_registry_model(model_cfg: dict):
    from crrg.models.registry import create_model

    name = model_cfg.get("name")
    if not name:
        raise ConfigError("model.name is missing (a registry name such as clip-resnet18-minilm)")
    return create_model(name, pretrained=model_cfg.get("pretrained"), **(model_cfg.get("overrides") or {}))


def load_split(config: dict, split_key: str, default: str) -> list[StudyRecord]:
    data = _section(config, "data")
    manifest = data.get("manifest")
    if not manifest:
        raise ConfigError("data.manifest is missing (crrg train clip --data M.jsonl)")
    split = data.get(split_key, default)
    return read_manifest(manifest, split=split) if split else []


def _text_augment(setting) -> TextAugment | None:
    """``data.text_augment``: true (the defaults), false, or the :class:`TextAugment` fields."""
    if isinstance(setting, dict):
        from crrg.errors import reject_unknown_keys

        reject_unknown_keys(TextAugment, setting, "data.text_augment option(s)")
        return TextAugment(**setting)
    return TextAugment() if setting else None


def freeze_text_layers(model, n_layers: int) -> int:
    """Freeze the text embeddings and the lowest ``n_layers`` transformer layers (-1: the whole tower,
    whose outputs :class:`LockedTextFeatures` then caches).

    On a CPU most of a step's time goes into the text tower's backward pass; the pretrained lower
    layers of MiniLM change little in contrastive fine-tuning, so freezing them buys speed cheaply.
    Returns how many parameters were frozen.
    """
    if n_layers == 0:
        return 0
    hf = model.text_encoder.model
    frozen = []
    if n_layers < 0:
        frozen = list(hf.parameters())
    else:
        layers = getattr(getattr(hf, "encoder", None), "layer", None)
        if layers is None:
            raise ConfigError("model.freeze_text_layers needs a BERT-style text encoder (encoder.layer)")
        frozen = list(hf.embeddings.parameters()) + [p for layer in layers[:n_layers] for p in layer.parameters()]
    for p in frozen:
        p.requires_grad_(False)
    return sum(p.numel() for p in frozen)


def copy_image_encoder(model, source: str) -> None:
    """Start the image tower from another saved model's (``model.image_encoder_from``): a CLIP, or a
    classifier trained on a CLIP tower, whose projection and text side are not wanted or not there."""
    from crrg.models.registry import load_pretrained

    donor = getattr(load_pretrained(source), "image_encoder", None)
    if donor is None:
        raise ConfigError(f"model.image_encoder_from: {source} has no image tower")
    try:
        model.image_encoder.load_state_dict({k: v.float() for k, v in donor.state_dict().items()})
    except RuntimeError as exc:
        raise ConfigError(f"model.image_encoder_from: the image tower of {source} does not fit this model "
                          f"({str(exc).splitlines()[0]})") from None
    log.info("image tower initialised from %s", source)


class LockedFeatures:
    """A frozen tower's pooled output, computed once per key and cached.

    A locked tower's output for a given input never changes, so computing it again each epoch is
    wasted work. Features are computed in eval mode (no dropout, fixed batch-norm statistics),
    exactly as the exported model computes them later; the tower's mode is restored afterwards.
    Subclasses say what the tower is and how a chunk of keys becomes features.
    """

    tower: torch.nn.Module

    def __init__(self, batch_size: int, max_entries: int | None = None):
        self.batch_size, self.max_entries = batch_size, max_entries
        self.cache: dict[str, torch.Tensor] = {}

    def _features(self, keys: list[str], device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, keys: list[str], device: torch.device) -> torch.Tensor:
        missing = [k for k in dict.fromkeys(keys) if k not in self.cache]
        if missing:
            was_training = self.tower.training
            self.tower.eval()
            if self.max_entries is not None and len(self.cache) + len(missing) > self.max_entries:
                self.cache.clear()  # heavy augmentation: start over rather than grow without bound
            for i in range(0, len(missing), self.batch_size):
                chunk = missing[i:i + self.batch_size]
                self.cache.update(zip(chunk, self._features(chunk, device).float().cpu()))
            self.tower.train(was_training)
        return torch.stack([self.cache[k] for k in keys]).to(device)


class LockedTextFeatures(LockedFeatures):
    """The fully frozen text tower (``freeze_text_layers: -1``, text-locked tuning in the manner of
    LiT), one entry per distinct report text. On a CPU its forward pass costs about as much as the
    image tower's training step; cached, every epoch after the first is nearly image-only, and the
    projection on top stays trainable. Encoded as zero-shot prompts and retrieval queries are later.
    """

    def __init__(self, tower, max_entries: int = 200_000, batch_size: int = 64):
        super().__init__(batch_size, max_entries)
        self.tower = tower

    def _features(self, keys: list[str], device: torch.device) -> torch.Tensor:
        return self.tower(**self.tower.tokenize(keys, device=device))


class LockedImageFeatures(LockedFeatures):
    """The frozen image tower (``freeze_image_tower: true``), one entry per image path.

    Locked-image tuning (LiT) with a locked text tower too: only the two projections and the
    temperature learn. On a CPU that turns an epoch from minutes of image-tower steps into seconds,
    which buys the many epochs a fresh projection pair needs to align two fixed feature spaces. The
    images go through the model's own preprocessing, the pixels zero-shot, retrieval and
    classification see. ``model``: a CLIP model or a classifier (anything with ``image_encoder`` and
    ``preprocess``).
    """

    def __init__(self, model, batch_size: int = 32):
        super().__init__(batch_size)
        self.model = model
        self.tower = model.image_encoder

    def _features(self, keys: list[str], device: torch.device) -> torch.Tensor:
        return self.tower(self.model.preprocess([load_image(p) for p in keys]).to(device))


def freeze_image_tower(model) -> int:
    """Freeze ``model.image_encoder`` (a CLIP model's or a classifier's); returns how many parameters."""
    model.image_encoder.requires_grad_(False)
    return sum(p.numel() for p in model.image_encoder.parameters())


def reject_moved_settings(config: dict) -> None:
    """Settings that moved to the trainer section (one schedule for every task) are named, not ignored."""
    if "warmup_fraction" in _section(config, "model"):
        raise ConfigError("model.warmup_fraction moved to trainer.warmup_fraction (one schedule for every task)")


class ClipModule(L.LightningModule):
    def __init__(self, config: dict):
        super().__init__()
        reject_moved_settings(config)
        self.config = config
        model_cfg = _section(config, "model")
        self.model = build_registry_model(model_cfg)
        if model_cfg.get("image_encoder_from"):
            copy_image_encoder(self.model, model_cfg["image_encoder_from"])
        n_frozen = int(model_cfg.get("freeze_text_layers", 0))
        frozen = freeze_text_layers(self.model, n_frozen)
        if frozen:
            log.info("froze %d text-encoder parameters", frozen)
        self.locked_text = LockedTextFeatures(self.model.text_encoder) if n_frozen < 0 else None
        self.locked_image = None
        if image_tower_locked(config):
            if not (model_cfg.get("image_encoder_from") or model_cfg.get("pretrained")):
                log.warning("model.freeze_image_tower on an untrained image tower: set model.image_encoder_from "
                            "(or model.pretrained) to a trained CLIP or classifier")
            log.info("froze %d image-tower parameters; its features are cached per image", freeze_image_tower(self.model))
            self.locked_image = LockedImageFeatures(self.model)

    def _forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        features = self.locked_text(list(batch["text"]), self.device) if self.locked_text is not None else None
        image_features = self.locked_image(list(batch["path"]), self.device) if self.locked_image is not None else None
        return self.model(batch["image"], batch["text"], text_features=features, image_features=image_features)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self._forward(batch)
        self.log("train_loss", out["loss"], prog_bar=True, batch_size=len(batch["text"]))
        self.log("temperature", 1.0 / self.model.scale(), batch_size=len(batch["text"]))
        return out["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self._forward(batch)
        n = len(batch["text"])
        top1 = (out["image_emb"] @ out["text_emb"].t()).argmax(-1).eq(torch.arange(n, device=self.device)).float().mean()
        self.log("val_loss", out["loss"], prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val_top1", top1, batch_size=n, sync_dist=True)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.model.clamp_logit_scale_()

    def configure_optimizers(self):
        from crrg.training.optim import configure_adamw

        model_cfg = _section(self.config, "model")
        scale = float(model_cfg.get("text_lr_scale", 1.0))
        base = float(_section(self.config, "trainer").get("lr", 1e-4))
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad and n != "logit_scale"]
        text = [p for n, p in trainable if n.startswith("text_encoder.")]
        other = [p for n, p in trainable if not n.startswith("text_encoder.")]
        # the temperature is not a weight: no weight decay pulling it towards T = 1 (as in CLIP)
        groups = [{"params": other, "lr": base}, {"params": [self.model.logit_scale], "lr": base, "weight_decay": 0.0}]
        groups += [{"params": text, "lr": base * scale}] if text else []
        return configure_adamw(self, groups, self.config)


class ClipDataModule(L.LightningDataModule):
    def __init__(self, config: dict, image_size: int, model_section: str = "both"):
        super().__init__()
        self.config = config
        self.image_size = image_size
        self.model_section = model_section  # the model config's report_section; data.section overrides it
        self.train_set: ImageTextDataset | None = None
        self.val_set: ImageTextDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        data = _section(self.config, "data")
        section = data.get("section") or self.model_section
        locked = image_tower_locked(self.config)
        if locked and data.get("image_augment"):
            raise ConfigError("model.freeze_image_tower caches one feature vector per image, which image augmentation "
                              "would make stale; set data.image_augment: false")
        image_aug = ImageAugment() if data.get("image_augment", not locked) else None
        text_aug = _text_augment(data.get("text_augment", True))
        train = load_split(self.config, "train_split", "train")
        if not train:
            raise InputError(f"the manifest has no studies in split {data.get('train_split', 'train')!r}")
        self.train_set = ImageTextDataset(train, self.image_size, section, image_aug, text_aug, decode_images=not locked)
        val = load_split(self.config, "val_split", "val")
        self.val_set = ImageTextDataset(val, self.image_size, section, decode_images=not locked) if val else None

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        trainer = _section(self.config, "trainer")
        return DataLoader(dataset, batch_size=int(trainer.get("batch_size", 8)), shuffle=shuffle,
                          num_workers=int(trainer.get("num_workers", 0)), collate_fn=collate_pairs,
                          drop_last=shuffle and len(dataset) > int(trainer.get("batch_size", 8)))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []


def zero_shot_thresholds(model, records: list[StudyRecord], prompts: str | None, unknown: str = "ignore") -> dict[str, float]:
    """Thresholds per observation chosen on labelled validation studies (F1-optimal); others stay 0.5.

    ``unknown="negative"`` counts findings a report does not mention as absent (synthetic data).
    """
    from crrg.clip.classifier import choose_thresholds
    from crrg.clip.zeroshot import ZeroShotClassifier

    records = [r for r in records if primary_image(r)]
    if not records:
        return {}
    zs = ZeroShotClassifier.from_prompt_file(model, prompts)
    probs = zs.probabilities([load_image(primary_image(r)) for r in records])
    pairs = [label_targets(r, zs.observations, uncertain="ignore", unknown=unknown) for r in records]
    return choose_thresholds(np.array([t for t, _ in pairs]), probs, zs.observations, mask=np.array([m for _, m in pairs]))


class ClipTask:
    def validate(self, config: dict) -> None:
        """Checks that need no model or data: moved settings, the model name, the augmentation options."""
        reject_moved_settings(config)
        model_cfg, data = _section(config, "model"), _section(config, "data")
        if not (model_cfg.get("name") or model_cfg.get("pretrained")):
            raise ConfigError("model.name is missing (a registry name such as clip-resnet18-minilm)")
        _text_augment(data.get("text_augment", True))
        if image_tower_locked(config) and data.get("image_augment"):
            raise ConfigError("model.freeze_image_tower caches one feature vector per image: set data.image_augment: false")

    def build_module(self, config: dict) -> ClipModule:
        return ClipModule(config)

    def build_datamodule(self, config: dict) -> ClipDataModule:
        from crrg.models.registry import get_model_config

        model_cfg = _section(config, "model")
        base = get_model_config(model_cfg["name"]) if model_cfg.get("name") else {}
        overrides = model_cfg.get("overrides") or {}
        size = int(overrides.get("image_encoder", {}).get("image_size", base.get("image_encoder", {}).get("image_size", 224)))
        section = overrides.get("report_section", base.get("report_section", "both"))
        return ClipDataModule(config, size, section)

    def export(self, module: ClipModule, out_dir: Path) -> None:
        from crrg.clip.retrieval import build_index
        from crrg.models.registry import save_pretrained

        model = module.model.cpu().eval()
        export = _section(module.config, "export")
        if export.get("index_train_reports", True):
            model.retrieval = build_index(model, load_split(module.config, "train_split", "train"))
        if export.get("choose_thresholds", True):
            val = load_split(module.config, "val_split", "val")
            if val:
                model.thresholds = zero_shot_thresholds(model, val, export.get("prompts"), export.get("unknown", "ignore"))
        save_pretrained(model, out_dir)


def _register() -> None:
    from crrg.training.tasks import register_task

    register_task("clip", ClipTask)


_register()
