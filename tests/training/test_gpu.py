"""Training steps on CUDA with ``precision: auto`` (bf16 where the GPU has it), and pinned loaders.

Marked ``gpu``: skipped where no CUDA device is present (every CI machine so far). The same bodies run
on the CPU in ``test_cpu_twin_of_the_gpu_checks`` so the checks themselves are known to work.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

from crrg.training.config import load_config

REPO = Path(__file__).resolve().parents[2]


class Seen(Callback):
    """What the trainer really used: precision plugin, device, loader pinning."""

    def __init__(self) -> None:
        self.seen: dict = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.seen:
            return
        loader = trainer.train_dataloader
        loader = getattr(loader, "loader", loader)
        self.seen = {"precision": trainer.precision, "device": pl_module.device.type, "pin_memory": loader.pin_memory}


def _toy(out: Path, accelerator: str) -> dict:
    from crrg.training.engine import train

    seen = Seen()
    config = load_config(REPO / "configs" / "toy.yaml", ["trainer.max_steps=8", "trainer.precision=auto",
                                                          f"trainer.accelerator={accelerator}", "trainer.num_workers=1"])
    model = train("toy", config, out, progress_bar=False, extra_callbacks=[seen])
    assert all(torch.isfinite(v).all() for v in load_file(str(model / "model.safetensors")).values())
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 8
    return seen.seen


def _rrg_stages(tmp_path: Path, accelerator: str) -> Path:
    from crrg.rrg.task import STAGES, train_stages
    from tests.rrg.conftest import TINY_CONFIG, make_studies

    manifest = make_studies(tmp_path / "data", n=6)
    per_stage = {"trainer": {"max_steps": 2, "max_epochs": None, "batch_size": 2}}
    config = {"model": {"config": TINY_CONFIG}, "data": {"manifest": str(manifest)},
              "trainer": {"seed": 0, "max_steps": 2, "lr": 1e-3, "log_every_n_steps": 1, "precision": "auto",
                          "accelerator": accelerator},
              "stages": {stage: per_stage for stage in STAGES}}
    return train_stages(config, tmp_path / "run", progress_bar=False)


@pytest.mark.gpu
def test_toy_trains_on_cuda_in_bf16_with_pinned_loaders(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    seen = _toy(tmp_path / "toy", "gpu")
    expected = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    assert seen == {"precision": expected, "device": "cuda", "pin_memory": True}


@pytest.mark.gpu
def test_every_rrg_stage_takes_training_steps_on_cuda(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from crrg.models.registry import load_pretrained

    model = load_pretrained(_rrg_stages(tmp_path, "gpu"))
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_cpu_twin_of_the_gpu_checks(tmp_path):
    assert _toy(tmp_path / "toy", "cpu") == {"precision": "32-true", "device": "cpu", "pin_memory": False}
    from crrg.models.registry import load_pretrained

    model = load_pretrained(_rrg_stages(tmp_path, "cpu"))
    assert all(torch.isfinite(p).all() for p in model.parameters())
