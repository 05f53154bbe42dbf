"""``crrg train blip``: the two ClinicalBLIP fine-tuning stages as one task of the training engine.

Config sections (see ``configs/blip/stage1.yaml`` and ``stage2.yaml``)::

    stage: "1"                      # or "2"; --stage sets it
    model:
      backend: null                 # null: crrg's own ClinicalBLIP; instructblip: a hub InstructBLIP
      name: blip-vit-small-gpt2     # registry config (crrg/models/configs/blip-*.json) ...
      overrides: {}                 # ... with these keys merged in (image_size, qformer sizes, prompt)
      init_from: null               # a saved ClinicalBLIP folder to continue from (stage 2: stage 1's model/)
      lm_pretrained: null           # language model folder or hub id (replaces lm.pretrained)
      hub_id: null                  # instructblip: hub id (Salesforce/instructblip-flan-t5-xl) or local folder
      dtype: null                   # instructblip: the frozen base's dtype (float32, bfloat16, float16)
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

With ``backend: instructblip`` the stages fine-tune Salesforce's InstructBLIP (:mod:`crrg.blip.hub`):
the same groups train (its Q-Former, query tokens and language projection; LoRA on its ViT, then on
its LM's query/value projections), the prompts and data are the same, the loss is the LM loss of the
report, and the exported folder holds only the trained weights and names the hub base.
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
from crrg.blip.hub import HubBatch, HubInstructBlip
from crrg.blip.model import BlipBatch, ClinicalBlip
from crrg.errors import ConfigError, InputError
from crrg.models.registry import create_model, load_pretrained, save_pretrained
from crrg.records import read_manifest
from crrg.training.tasks import register_task

log = logging.getLogger(__name__)

STAGES = ("1", "2")
_SECTIONS = {
    "model": {"backend": None, "name": "blip-vit-small-gpt2", "overrides": {}, "init_from": None, "lm_pretrained": None,
              "hub_id": None, "dtype": None},
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


BACKENDS = (None, "instructblip")


def _check_backend(config: dict) -> None:
    """Settings that do not fit the backend, refused before any model is built."""
    model_cfg = _section(config, "model")
    if model_cfg["backend"] not in BACKENDS:
        raise ConfigError(f"model.backend {model_cfg['backend']!r} is not one of {list(BACKENDS)}")
    if model_cfg["backend"] != "instructblip":
        return
    if model_cfg["lm_pretrained"]:
        raise ConfigError("model.lm_pretrained is for crrg's own ClinicalBLIP; an InstructBLIP's LM is part of model.hub_id")
    if float(_section(config, "loss")["itc_weight"]) > 0:
        raise ConfigError("loss.itc_weight is for crrg's own ClinicalBLIP; an InstructBLIP trains on the report's LM loss (set 0)")
    if {"vision", "lm"} & set(config.get("trainable") or ()):
        raise ConfigError("an InstructBLIP trains its Q-Former and LoRA adapters only (its folder names the hub base "
                          "for the rest): drop 'vision' / 'lm' from trainable")
    # stage 2 recipes leave model.init_from to the command line, as crrg's own recipes do
    if stage_of(config) == "1" and not model_cfg["hub_id"] and not model_cfg["init_from"]:
        raise ConfigError(_NO_HUB_ID)


_NO_HUB_ID = ("model.backend instructblip needs model.hub_id: a hub id such as Salesforce/instructblip-flan-t5-xl "
              "or a local folder (stage 2: model.init_from, stage 1's model/)")


def _hub_config(model_cfg: dict) -> dict:
    """The model config of a hub InstructBLIP to start from."""
    if not model_cfg["hub_id"]:
        raise ConfigError(_NO_HUB_ID)
    return {**dict(model_cfg["overrides"] or {}), "family": "blip", "backend": "instructblip",
            "hub_id": str(model_cfg["hub_id"]), "dtype": model_cfg["dtype"] or "float32"}


def _load_init(model_cfg: dict):
    folder = model_cfg["init_from"]
    if not Path(folder).is_dir():
        raise InputError(f"model.init_from {folder} is not a folder (stage 2 starts from stage 1's model/)")
    model = load_pretrained(folder).train()
    if model_cfg["backend"] == "instructblip" and not isinstance(model, HubInstructBlip):
        raise ConfigError(f"model.init_from {folder} is crrg's own ClinicalBLIP, not an InstructBLIP (model.backend)")
    base = getattr(model, "config", {}).get("hub_id") if isinstance(model, HubInstructBlip) else None
    if model_cfg["hub_id"] and base and str(model_cfg["hub_id"]) != base:
        raise ConfigError(f"model.init_from {folder} was trained from {base}, not model.hub_id {model_cfg['hub_id']}")
    return model


def build_blip(config: dict) -> ClinicalBlip | HubInstructBlip:
    """The model a stage starts from, with the stage's adapters attached and its groups trainable."""
    _check_backend(config)
    model_cfg, lora_cfg = _section(config, "model"), _section(config, "lora")
    if model_cfg["init_from"]:
        model = _load_init(model_cfg)
    elif model_cfg["backend"] == "instructblip":
        model = create_model(_hub_config(model_cfg))
    else:
        overrides = dict(model_cfg["overrides"] or {})
        if model_cfg["lm_pretrained"]:
            overrides["lm"] = {**overrides.get("lm", {}), "pretrained": str(model_cfg["lm_pretrained"])}
        model = create_model(model_cfg["name"], **overrides)
    hub = isinstance(model, HubInstructBlip)
    if not isinstance(model, ClinicalBlip) and not hub:
        raise ConfigError(f"{model_cfg['init_from'] or model_cfg['name']} is not a trainable ClinicalBLIP model")
    for part in lora_lib.ADAPTER_PARTS:
        if lora_cfg[part] and not lora_lib.has_lora(model, part):
            model.add_adapters(part, lora_cfg[part])
    if hub and model_cfg["backend"] is None:  # an InstructBLIP folder continued without naming the backend
        _check_backend({**config, "model": {**model_cfg, "backend": "instructblip"}})
    if hub and model_cfg["init_from"] and model_cfg["dtype"]:
        model.set_base_dtype(model_cfg["dtype"])
    groups = config.get("trainable") or lora_lib.STAGE_DEFAULTS[int(stage_of(config))]
    groups = [g for g in groups if g != "soft_prompt" or getattr(model, "soft_prompt", None) is not None]
    counts = lora_lib.set_trainable(model, groups)
    model.train()  # a hub checkpoint is loaded in eval mode; its dropout belongs to fine-tuning as in LAVIS
    if not hub:
        model.itc_weight = float(_section(config, "loss")["itc_weight"])
    total = sum(p.numel() for p in model.parameters())
    log.info("ClinicalBLIP stage %s trains %s of %s parameters: %s", stage_of(config), f"{sum(counts.values()):,}",
             f"{total:,}", counts)
    return model


class BlipModule(L.LightningModule):
    def __init__(self, model: ClinicalBlip | HubInstructBlip, config: dict) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def training_step(self, batch: BlipBatch | HubBatch, batch_idx: int) -> torch.Tensor:
        loss = self.model(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch.labels.shape[0])
        return loss

    def validation_step(self, batch: BlipBatch | HubBatch, batch_idx: int) -> None:
        self.log("val_loss", self.model(batch), prog_bar=True, batch_size=batch.labels.shape[0], sync_dist=True)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, (BlipBatch, HubBatch)):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """A hub InstructBLIP's checkpoints hold only what it trains (HubInstructBlip.state_dict): its own
        loader knows the hub base is not in them and still refuses a checkpoint lacking a trained weight."""
        if isinstance(self.model, HubInstructBlip):
            inner = {k.removeprefix("model."): v for k, v in state_dict.items()}
            return self.model.load_state_dict(inner, strict=strict, assign=assign)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("this stage trains no parameters; check 'trainable' and 'lora'")
        from crrg.training.optim import configure_adamw

        return configure_adamw(self, params, self.config)


class BlipData(L.LightningDataModule):
    def __init__(self, model: ClinicalBlip | HubInstructBlip, config: dict) -> None:
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
                                    predictions, cache_images=bool(self.data["cache_images"]),
                                    images_read=getattr(self.model, "images_read", None))

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
        self._model: ClinicalBlip | HubInstructBlip | None = None

    def validate(self, config: dict) -> None:
        """Checks that need no model: the stage, every section's keys and the backend's settings."""
        stage_of(config)
        for name in _SECTIONS:
            _section(config, name)
        _check_backend(config)

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
