"""The ``toy`` task: a tiny MLP regressing a fixed random linear map of synthetic inputs.

It exists to exercise the engine end to end in seconds (DDP, kill + resume, export) and doubles as
the smallest complete example of a task. It uses dropout on purpose, so a resumed run only matches
an uninterrupted one if random draws are resumable too (crrg.training.seeding), and the shared
warmup-cosine schedule (crrg.training.optim), so the scheduler state must come back as well.

Config sections::

    model: {family: toy-mlp, in_features: 8, hidden: 16, out_features: 1, dropout: 0.1}
    data: {samples: 64, val_samples: 16, noise: 0.05, seed: 1234}
    toy: {crash_after_step: null, sleep_per_step: 0.0}   # test hooks: simulate a kill, slow down
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from crrg.errors import ConfigError
from crrg.models.registry import build_model, register_family, save_pretrained
from crrg.training.tasks import register_task

log = logging.getLogger(__name__)

DEFAULT_MODEL = {"family": "toy-mlp", "in_features": 8, "hidden": 16, "out_features": 1, "dropout": 0.1}
DEFAULT_DATA = {"samples": 64, "val_samples": 16, "noise": 0.05, "seed": 1234}


@register_family("toy-mlp")
def build_toy_mlp(config: dict) -> nn.Module:
    return nn.Sequential(
        nn.Linear(config["in_features"], config["hidden"]),
        nn.ReLU(),
        nn.Dropout(config.get("dropout", 0.0)),
        nn.Linear(config["hidden"], config["out_features"]),
    )


def _section(config: dict, name: str, defaults: dict) -> dict:
    section = config.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"config section {name!r} must be a mapping")
    unknown = sorted(set(section) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown {name} setting(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **section}


class ToyModule(L.LightningModule):
    def __init__(self, model_config: dict, config: dict, crash_after_step: int | None, sleep_per_step: float) -> None:
        super().__init__()
        self.model = build_model(model_config)
        self.config = config
        self.crash_after_step = crash_after_step
        self.sleep_per_step = sleep_per_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Runs after the checkpoint of the previous step was written: dying here is a kill between steps.
        if self.crash_after_step is not None and self.global_step >= self.crash_after_step:
            log.warning("toy: simulating a kill after step %d", self.global_step)
            os._exit(17)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.sleep_per_step:
            time.sleep(self.sleep_per_step)
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> Any:
        from crrg.training.optim import configure_adamw

        return configure_adamw(self, self.parameters(), self.config)


class ToyData(L.LightningDataModule):
    def __init__(self, model: dict, data: dict, batch_size: int, num_workers: int) -> None:
        super().__init__()
        self.model_config, self.data_config = model, data
        self.batch_size, self.num_workers = batch_size, num_workers

    def setup(self, stage: str | None = None) -> None:
        generator = torch.Generator().manual_seed(self.data_config["seed"])
        d_in, d_out = self.model_config["in_features"], self.model_config["out_features"]
        weights = torch.randn(d_in, d_out, generator=generator)

        def make(n: int) -> TensorDataset:
            x = torch.randn(n, d_in, generator=generator)
            y = x @ weights + self.data_config["noise"] * torch.randn(n, d_out, generator=generator)
            return TensorDataset(x, y)

        self.train_set = make(self.data_config["samples"])
        self.val_set = make(self.data_config["val_samples"])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)


class ToyTask:
    """Tiny regression; see the module docstring."""

    def build_module(self, config: dict) -> ToyModule:
        model = _section(config, "model", DEFAULT_MODEL)
        hooks = _section(config, "toy", {"crash_after_step": None, "sleep_per_step": 0.0})
        return ToyModule(model, config, hooks["crash_after_step"], float(hooks["sleep_per_step"]))

    def build_datamodule(self, config: dict) -> ToyData:
        model = _section(config, "model", DEFAULT_MODEL)
        data = _section(config, "data", {**DEFAULT_DATA, "manifest": None})
        if data["samples"] < 1:
            raise ConfigError("data.samples must be at least 1")
        return ToyData(model, data, config["trainer"]["batch_size"], config["trainer"]["num_workers"])

    def validate(self, config: dict) -> None:
        self.build_datamodule(config)  # checks every section; builds nothing heavy

    def export(self, module: ToyModule, out_dir: Path) -> None:
        save_pretrained(module.model, out_dir)


register_task("toy", ToyTask)
