"""``crrg train blip``: the two ClinicalBLIP fine-tuning stages as one task of the training engine.

Config sections (see ``configs/blip/stage1.yaml`` and ``stage2.yaml``)::

    stage: "1"                      # or "2"; --stage sets it
    model:
      name: blip-vit-small-gpt2     # registry config (crrg/models/configs/blip-*.json) ...
      overrides: {}                 # ... with these keys merged in (image_size, qformer sizes, prompt)
      init_from: null               # a saved ClinicalBLIP folder to continue from (stage 2: stage 1's model/)
      lm_pretrained: null           # language model folder or hub id (replaces lm.pretrained)
    lora:                           # adapters to attach if the model does not have them yet
      vision: {r: 8, alpha: 16, dropout: 0.05}
      lm: null
    trainable: null                 # groups to train (crrg.blip.lora.TRAINABLE_GROUPS); null: the stage's default
    loss: {itc_weight: 0.0}         # + weight x BLIP-2 image-text contrastive loss (stage 1 alignment)
    prompt:
      train_variants: [none, indication, ground_truth]
      findings_file: null           # {study_id: {observation: probability}} of a classifier, for "predicted"
    data: {manifest: M.jsonl, train_split: train, val_split: val, max_val_studies: 64}

Stage 1 trains the Q-Former bridge and vision LoRA with the language model frozen; stage 2 adds LoRA
to the language model (see :mod:`crrg.blip.lora`). The exported model folder holds the full weights
and each adapter separately under ``adapters/``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from crrg.blip import lora as lora_lib
from crrg.blip.data import BlipStudyDataset, read_findings_file
from crrg.blip.model import BlipBatch, ClinicalBlip
from crrg.errors import ConfigError, InputError
from crrg.models.registry import create_model, load_pretrained, save_pretrained
from crrg.records import read_manifest
from crrg.training.tasks import register_task

log = logging.getLogger(__name__)

STAGES = ("1", "2")
_SECTIONS = {
    "model": {"name": "blip-vit-small-gpt2", "overrides": {}, "init_from": None, "lm_pretrained": None},
    "lora": {"vision": None, "lm": None},
    "prompt": {"train_variants": ["none", "indication", "ground_truth"], "findings_file": None},
    "loss": {"itc_weight": 0.0},
    "data": {"manifest": None, "train_split": "train", "val_split": "val", "max_val_studies": 64, "cache_images": True},
}


def _section(config: dict, name: str) -> dict:
    section = config.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"config section {name!r} must be a mapping")
    unknown = sorted(set(section) - set(_SECTIONS[name]))
    if unknown:
        raise ConfigError(f"unknown {name} setting(s) {unknown}; known: {sorted(_SECTIONS[name])}")
    return {**_SECTIONS[name], **section}


def stage_of(config: dict) -> str:
    stage = str(config.get("stage") or "1")
    if stage not in STAGES:
        raise ConfigError(f"ClinicalBLIP has stages {list(STAGES)}, not {stage!r}")
    return stage


def build_blip(config: dict) -> ClinicalBlip:
    """The model a stage starts from, with the stage's adapters attached and its groups trainable."""
    model_cfg, lora_cfg = _section(config, "model"), _section(config, "lora")
    if model_cfg["init_from"]:
        if not Path(model_cfg["init_from"]).is_dir():
            raise InputError(f"model.init_from {model_cfg['init_from']} is not a folder (stage 2 starts from stage 1's model/)")
        model = load_pretrained(model_cfg["init_from"]).train()
    else:
        overrides = dict(model_cfg["overrides"] or {})
        if model_cfg["lm_pretrained"]:
            overrides["lm"] = {**overrides.get("lm", {}), "pretrained": str(model_cfg["lm_pretrained"])}
        model = create_model(model_cfg["name"], **overrides)
    if not isinstance(model, ClinicalBlip):
        raise ConfigError(f"{model_cfg['init_from'] or model_cfg['name']} is not a trainable ClinicalBLIP model")
    for part in lora_lib.ADAPTER_PARTS:
        if lora_cfg[part] and not lora_lib.has_lora(model, part):
            model.add_adapters(part, lora_cfg[part])
    model.itc_weight = float(_section(config, "loss")["itc_weight"])
    groups = config.get("trainable") or lora_lib.STAGE_DEFAULTS[int(stage_of(config))]
    groups = [g for g in groups if g != "soft_prompt" or model.soft_prompt is not None]
    counts = lora_lib.set_trainable(model, groups)
    log.info("ClinicalBLIP stage %s trains %s parameters: %s", stage_of(config), f"{sum(counts.values()):,}", counts)
    return model


class BlipModule(L.LightningModule):
    def __init__(self, model: ClinicalBlip, config: dict) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def training_step(self, batch: BlipBatch, batch_idx: int) -> torch.Tensor:
        loss = self.model(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch.lm_ids.shape[0])
        return loss

    def validation_step(self, batch: BlipBatch, batch_idx: int) -> None:
        self.log("val_loss", self.model(batch), prog_bar=True, batch_size=batch.lm_ids.shape[0], sync_dist=True)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch.to(device) if isinstance(batch, BlipBatch) else super().transfer_batch_to_device(batch, device, dataloader_idx)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("this stage trains no parameters; check 'trainable' and 'lora'")
        from crrg.training.optim import configure_adamw

        return configure_adamw(self, params, self.config)


class BlipData(L.LightningDataModule):
    def __init__(self, model: ClinicalBlip, config: dict) -> None:
        super().__init__()
        self.model, self.config = model, config
        self.data, self.prompt = _section(config, "data"), _section(config, "prompt")
        trainer = config.get("trainer") or {}
        self.batch_size, self.num_workers = int(trainer.get("batch_size", 8)), int(trainer.get("num_workers", 0))

    def setup(self, stage: str | None = None) -> None:
        if not self.data["manifest"]:
            raise ConfigError("data.manifest is not set (pass --data M.jsonl)")
        records = read_manifest(self.data["manifest"])
        predictions = read_findings_file(self.prompt["findings_file"]) if self.prompt["findings_file"] else None

        def dataset(split: str, variants: list[str], limit: int | None = None) -> BlipStudyDataset | None:
            chosen = [r for r in records if r.split == split][:limit]
            if not chosen:
                return None
            return BlipStudyDataset(chosen, self.model.prepare_sample, self.model.prompt_config, variants,
                                    predictions, cache_images=bool(self.data["cache_images"]))

        self.train_set = dataset(self.data["train_split"], list(self.prompt["train_variants"]))
        if self.train_set is None:
            raise InputError(f"{self.data['manifest']} has no '{self.data['train_split']}' studies")
        # validation always sees one fixed prompt variant, so val_loss is comparable across epochs
        self.val_set = dataset(self.data["val_split"], [self.prompt["train_variants"][-1]], self.data["max_val_studies"])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          collate_fn=self.model.collate)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=self.model.collate)


class BlipTask:
    """ClinicalBLIP multi-stage fine-tuning; see the module docstring."""

    stages = STAGES

    def __init__(self) -> None:
        self._model: ClinicalBlip | None = None

    def validate(self, config: dict) -> None:
        """Checks that need no model: the stage and every section's keys."""
        stage_of(config)
        for name in _SECTIONS:
            _section(config, name)

    def build_module(self, config: dict) -> BlipModule:
        self._model = build_blip(config)
        return BlipModule(self._model, config)

    def build_datamodule(self, config: dict) -> BlipData:
        if self._model is None:
            self.build_module(config)
        return BlipData(self._model, config)

    def export(self, module: BlipModule, out_dir: Path) -> None:
        save_pretrained(module.model, out_dir)


register_task("blip", BlipTask)
