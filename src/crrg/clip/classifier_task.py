"""`crrg train classifier`: linear probe or full fine-tune of the CLIP image tower on labels.

Config sections (see configs/classifier/*.yaml)::

    model: {name: classifier-resnet18, from_clip: RUN_DIR_OR_HUB_ID, mode: linear_probe | finetune,
            labels: null, overrides: {...}}
    data:  {manifest: M.jsonl, train_split: train, val_split: val, uncertain: positive}
       or  {image_folder: {train: DIR, val: DIR}}   (class sub-folders, e.g. 0_normal/ 1_abnormal/)
    trainer: {...}

A linear probe keeps the tower frozen *and in eval mode*, so batch-norm statistics learnt during
contrastive pretraining are not re-estimated from the labelled set. On export the per-label
thresholds are chosen on the validation data and saved with the model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from crrg.clip.classifier import choose_thresholds
from crrg.clip.data import ImageAugment, LabeledImage, LabeledImageDataset, labeled_from_records, read_image_folder
from crrg.clip.task import LockedImageFeatures, _section, freeze_image_tower, reject_moved_settings
from crrg.errors import ConfigError, InputError
from crrg.observations import CHEXPERT_14
from crrg.records import read_manifest

log = logging.getLogger(__name__)
MODES = ("linear_probe", "finetune")


def labeled_split(config: dict, which: str) -> tuple[list[LabeledImage], list[str]]:
    """Items and label names of the ``train`` or ``val`` part of the configured data."""
    data = _section(config, "data")
    folders = data.get("image_folder")
    if folders:
        if not isinstance(folders, dict) or which not in folders:
            raise ConfigError(f"data.image_folder needs a '{which}' folder")
        return read_image_folder(folders[which])
    manifest = data.get("manifest")
    if not manifest:
        raise ConfigError("set data.manifest (crrg train classifier --data M.jsonl) or data.image_folder")
    if Path(manifest).is_dir():  # --data DIR: an image-folder dataset with train/ and val/ (or valid/)
        root = Path(manifest)
        sub = {"train": ["train"], "val": ["val", "valid", "validation"]}[which]
        for name in sub:
            if (root / name).is_dir():
                return read_image_folder(root / name)
        if which == "val":
            return [], read_image_folder(root / "train")[1]
        raise InputError(f"{root} is a folder but has no train/ sub-folder of class folders")
    labels = list(_section(config, "model").get("labels") or CHEXPERT_14)
    unknown = [n for n in labels if n not in CHEXPERT_14]
    if unknown:
        raise ConfigError(f"model.labels {unknown} are not CheXpert-14 names")
    split = data.get(f"{which}_split", which)
    records = read_manifest(manifest, split=split)
    return labeled_from_records(records, labels, data.get("uncertain", "positive")), labels


def build_classifier_model(config: dict, labels: list[str]):
    from crrg.models.registry import create_model, get_model_config, load_pretrained

    model_cfg = _section(config, "model")
    mode = model_cfg.get("mode", "linear_probe")
    if mode not in MODES:
        raise ConfigError(f"model.mode {mode!r} is not one of {list(MODES)}")
    overrides = dict(model_cfg.get("overrides") or {})
    overrides["labels"] = labels
    clip = None
    if model_cfg.get("from_clip"):
        clip = load_pretrained(model_cfg["from_clip"])
        if clip.crrg_config.get("family") != "clip":
            raise ConfigError(f"model.from_clip {model_cfg['from_clip']} is not a CLIP model")
        overrides["image_encoder"] = {**clip.crrg_config["image_encoder"], "weights": None,
                                      **(model_cfg.get("overrides") or {}).get("image_encoder", {})}
    name = model_cfg.get("name") or "classifier-resnet18"
    model = create_model(name, pretrained=model_cfg.get("pretrained"), **overrides)
    if clip is not None:
        model.load_image_tower(clip)
    elif mode == "linear_probe" and not model_cfg.get("pretrained") and not get_model_config(name)["image_encoder"].get("weights"):
        log.warning("linear probe on a randomly initialised tower: set model.from_clip to a trained CLIP model")
    model.crrg_config["mode"] = mode
    return model, mode


def probe_features_cached(config: dict) -> bool:
    """A frozen tower without augmentation gives every image the same features each epoch: a linear
    probe then computes them once per image, and its later epochs cost only the head."""
    return (_section(config, "model").get("mode", "linear_probe") == "linear_probe"
            and not _section(config, "data").get("image_augment", True))


def classifier_image_size(config: dict) -> int:
    """The input size the classifier will be built with, without building it (or loading the CLIP)."""
    import json

    from crrg.models.registry import get_model_config

    model_cfg = _section(config, "model")
    override = (model_cfg.get("overrides") or {}).get("image_encoder", {}).get("image_size")
    if override:
        return int(override)
    clip = model_cfg.get("from_clip")
    if clip and (Path(clip) / "config.json").is_file():
        return int(json.loads((Path(clip) / "config.json").read_text())["image_encoder"].get("image_size", 224))
    if clip:
        from crrg.models.registry import load_pretrained

        return int(load_pretrained(clip).image_size)
    return int(get_model_config(model_cfg.get("name") or "classifier-resnet18")["image_encoder"].get("image_size", 224))


class ClassifierModule(L.LightningModule):
    def __init__(self, config: dict, labels: list[str]):
        super().__init__()
        reject_moved_settings(config)
        self.config = config
        self.model, self.mode = build_classifier_model(config, labels)
        if self.mode == "linear_probe":
            freeze_image_tower(self.model)
        self.locked_image = LockedImageFeatures(self.model) if probe_features_cached(config) else None
        self._val_scores: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []
        self._val_masks: list[torch.Tensor] = []

    def train(self, mode: bool = True) -> "ClassifierModule":
        """A linear probe's tower stays in eval mode (its batch-norm statistics are CLIP's). Done here,
        not in ``on_train_epoch_start``, which Lightning skips when it resumes mid-epoch."""
        super().train(mode)
        if mode and self.mode == "linear_probe":
            self.model.image_encoder.eval()
        return self

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.locked_image is not None:
            logits = self.model.head(self.model.dropout(self.locked_image(list(batch["path"]), self.device)))
        else:
            logits = self.model(batch["image"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["target"], weight=batch["mask"], reduction="sum")
        return loss / batch["mask"].sum().clamp(min=1.0), logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["target"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits = self._loss(batch)
        self.log("val_loss", loss, prog_bar=True, batch_size=len(batch["target"]), sync_dist=True)
        self._val_scores.append(torch.sigmoid(logits).detach().cpu())
        self._val_targets.append(batch["target"].cpu())
        self._val_masks.append(batch["mask"].cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_scores:
            return
        from sklearn.metrics import roc_auc_score

        scores, targets, masks = (torch.cat(x).numpy() for x in (self._val_scores, self._val_targets, self._val_masks))
        aucs = []
        for j in range(scores.shape[1]):
            keep = masks[:, j] > 0
            if len(np.unique(targets[keep, j])) == 2:
                aucs.append(roc_auc_score(targets[keep, j], scores[keep, j]))
        if aucs:
            self.log("val_macro_auc", float(np.mean(aucs)))
        self._val_scores, self._val_targets, self._val_masks = [], [], []

    def configure_optimizers(self):
        from crrg.training.optim import configure_adamw

        return configure_adamw(self, [p for p in self.model.parameters() if p.requires_grad], self.config)


class ClassifierDataModule(L.LightningDataModule):
    def __init__(self, config: dict, image_size: int):
        super().__init__()
        self.config = config
        self.image_size = image_size
        self.train_set: LabeledImageDataset | None = None
        self.val_set: LabeledImageDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        augment = ImageAugment() if _section(self.config, "data").get("image_augment", True) else None
        train, _ = labeled_split(self.config, "train")
        if not train:
            raise InputError("the training data has no labelled images")
        decode = not probe_features_cached(self.config)
        self.train_set = LabeledImageDataset(train, self.image_size, augment, decode_images=decode)
        val, _ = labeled_split(self.config, "val")
        self.val_set = LabeledImageDataset(val, self.image_size, decode_images=decode) if val else None

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        trainer = _section(self.config, "trainer")
        return DataLoader(dataset, batch_size=int(trainer.get("batch_size", 8)), shuffle=shuffle,
                          num_workers=int(trainer.get("num_workers", 0)))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []


@torch.no_grad()
def predict_items(model, items: list[LabeledImage], batch_size: int = 32) -> np.ndarray:
    from crrg.clip.data import load_image

    model.eval()
    out = [model.probabilities([load_image(it.path) for it in items[i:i + batch_size]]) for i in range(0, len(items), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, len(model.labels)))


class ClassifierTask:
    def __init__(self) -> None:
        self._labels: list[str] | None = None

    def _label_names(self, config: dict) -> list[str]:
        if self._labels is None:
            data = _section(config, "data")
            if data.get("image_folder") or (data.get("manifest") and Path(data["manifest"]).is_dir()):
                _, self._labels = labeled_split(config, "train")
            else:
                self._labels = list(_section(config, "model").get("labels") or CHEXPERT_14)
        return self._labels

    def validate(self, config: dict) -> None:
        """Checks that need no model or data: moved settings, the mode, the label names."""
        reject_moved_settings(config)
        model_cfg = _section(config, "model")
        if model_cfg.get("mode", "linear_probe") not in MODES:
            raise ConfigError(f"model.mode {model_cfg.get('mode')!r} is not one of {list(MODES)}")
        unknown = [n for n in (model_cfg.get("labels") or []) if n not in CHEXPERT_14]
        if unknown:
            raise ConfigError(f"model.labels {unknown} are not CheXpert-14 names")

    def build_module(self, config: dict) -> ClassifierModule:
        return ClassifierModule(config, self._label_names(config))

    def build_datamodule(self, config: dict) -> ClassifierDataModule:
        return ClassifierDataModule(config, classifier_image_size(config))

    def export(self, module: ClassifierModule, out_dir: Path) -> None:
        from crrg.models.registry import save_pretrained

        model = module.model.cpu().eval()
        val, labels = labeled_split(module.config, "val")
        if val:
            scores = predict_items(model, val)
            model.thresholds = choose_thresholds(np.array([v.target for v in val]), scores, labels,
                                                 mask=np.array([v.mask for v in val]))
        save_pretrained(model, out_dir)


def _register() -> None:
    from crrg.training.tasks import register_task

    register_task("classifier", ClassifierTask)


_register()
