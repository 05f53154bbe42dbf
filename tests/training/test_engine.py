"""The training engine end to end on the toy task: run folder, export, kill + resume, DDP on CPU.

Resuming must end with exactly the weights of an uninterrupted run: the toy model uses dropout and a
warmup-cosine LR schedule, and the kills land mid-epoch, so this only holds if optimizer, scheduler, data
position and RNG state all come back.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crrg.errors import ConfigError
from crrg.training.config import load_config

REPO = Path(__file__).resolve().parents[2]
STEPS = 12
BASE = [f"trainer.max_steps={STEPS}", "trainer.checkpoint_every_n_steps=4", "trainer.log_every_n_steps=2", "trainer.monitor=val_loss"]


def toy_config(*overrides: str) -> dict:
    return load_config(REPO / "configs" / "toy.yaml", [*BASE, *overrides])


def run(out: Path, *overrides: str, devices: int = 1, resume: bool = False) -> Path:
    from crrg.training.engine import train

    return train("toy", toy_config(*overrides), out, devices=devices, resume=resume, progress_bar=False)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    run(out)
    return out


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    run(out, devices=2)
    return out


def test_run_folder_holds_config_checkpoints_logs_and_exported_model(single_run):
    from crrg.models.registry import load_pretrained

    config = json.loads((single_run / "config.json").read_text())
    assert config["trainer"]["max_steps"] == STEPS and config["trainer"]["keep_checkpoints"] == 2
    ckpts = sorted(p.name for p in (single_run / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["last.ckpt", "step00000008.ckpt", "step00000012.ckpt"]  # older step files pruned
    last = torch.load(single_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == STEPS

    model = load_pretrained(single_run / "model")  # safetensors + config.json, loadable by name of family
    exported = weights(single_run / "model")
    for key, value in model.state_dict().items():
        assert torch.equal(value, exported[key])
        assert torch.equal(value, last["state_dict"][f"model.{key}"])  # the export is the final state

    summary = json.loads((single_run / "metrics.json").read_text())
    assert summary["global_step"] == STEPS and summary["world_size"] == 1 and summary["resumed_from"] is None
    assert {"train_loss", "val_loss"} <= set(summary["metrics"])
    assert (single_run / "best-model" / "model.safetensors").is_file()

    rows = list(csv.DictReader((single_run / "logs" / "csv" / "metrics.csv").open()))
    assert any(row.get("train_loss") for row in rows)
    assert list((single_run / "logs" / "tensorboard").glob("events.out.tfevents.*"))


def test_training_reduces_the_loss(single_run, tmp_path):
    from crrg.models.registry import load_pretrained
    from crrg.training.toy import ToyTask

    task = ToyTask()
    data = task.build_datamodule(toy_config())
    data.setup()
    x, y = data.val_set.tensors
    untrained = task.build_module(toy_config()).model.eval()
    trained = load_pretrained(single_run / "model")
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(untrained(x), y)
        after = torch.nn.functional.mse_loss(trained(x), y)
    assert after < 0.7 * before


def test_sigkill_mid_run_then_resume_matches_uninterrupted_run(single_run, tmp_path):
    """A real SIGKILL of a CLI training process, then --resume in this process."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "crrg", "--quiet", "train", "toy", "--config", str(REPO / "configs" / "toy.yaml"), "--out", str(out)]
    for item in [*BASE, "toy.sleep_per_step=0.25"]:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoints" / "step00000004.ckpt").exists():
            if proc.poll() is not None:
                pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model").exists()  # really killed before the end

    run(out, resume=True)
    assert_same_weights(out / "model", single_run / "model")
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["global_step"] == STEPS and summary["resumed_from"].endswith(".ckpt")
    assert (out / "logs" / "csv").is_dir() and (out / "logs" / "csv-resume1" / "metrics.csv").is_file()


def test_ddp_two_processes_killed_and_resumed_matches_uninterrupted_run(ddp_run, tmp_path):
    """Two gloo worker processes die abruptly (os._exit) after step 6, mid-epoch; resume finishes the run."""
    summary = json.loads((ddp_run / "metrics.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == STEPS

    out = tmp_path / "killed"
    from crrg.training.engine import WorkerFailed

    with pytest.raises(WorkerFailed) as died:
        run(out, "toy.crash_after_step=6", devices=2)
    assert getattr(died.value, "exit_code", None) == 17, died.value
    assert not (out / "model").exists()
    resumed_step = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert resumed_step == 4  # the kill came after step 6; the last checkpoint is from step 4

    run(out, devices=2, resume=True)
    assert_same_weights(out / "model", ddp_run / "model")


def test_existing_run_is_not_overwritten_without_resume(single_run):
    with pytest.raises(ConfigError, match="--resume"):
        run(single_run)


def test_resuming_a_finished_run_changes_nothing(single_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(single_run, copy)
    run(copy, resume=True)
    assert_same_weights(copy / "model", single_run / "model")
    assert json.loads((copy / "metrics.json").read_text())["global_step"] == STEPS


def test_unknown_task_and_bad_stage_are_config_errors(tmp_path):
    from crrg.training.engine import train
    from crrg.training.tasks import register_task
    from crrg.training.toy import ToyTask

    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        train("nope", toy_config(), tmp_path / "a")

    class StagedToy(ToyTask):
        stages = ("vision", "language")

    register_task("staged-toy-test", StagedToy)
    with pytest.raises(ConfigError, match="no stage 'decoder'"):
        train("staged-toy-test", {**toy_config(), "stage": "decoder"}, tmp_path / "b")
    with pytest.raises(ConfigError, match="devices"):
        train("toy", toy_config(), tmp_path / "c", devices=0)
