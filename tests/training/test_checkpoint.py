"""Checkpoints are verified and loaded without running code (issue 23, items 8 and 10).

A resume point is a file on disk that anyone with write access to the run folder can replace: a
planted ``last.ckpt`` must be refused before its pickle runs anything, and a damaged one must be
refused loudly instead of loading wrong weights or silently restarting from step 0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crrg.errors import ConfigError
from crrg.training.config import load_config

REPO = Path(__file__).resolve().parents[2]
BASE = ["trainer.max_steps=8", "trainer.checkpoint_every_n_steps=4", "trainer.log_every_n_steps=2", "trainer.monitor=val_loss"]


def toy_config(*overrides: str) -> dict:
    return load_config(REPO / "configs" / "toy.yaml", [*BASE, *overrides])


def run(out: Path, resume: bool = False) -> Path:
    from crrg.training.engine import train

    return train("toy", toy_config(), out, resume=resume, progress_bar=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy") / "run"
    run(out)
    return out


class _Payload:
    """What an attacker plants: unpickling calls os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _plant(folder: Path, marker: Path, with_checksum: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "last.ckpt"
    torch.save({"state_dict": {}, "global_step": 3, "x": _Payload(f"touch {marker}")}, path)
    if with_checksum:  # an attacker who can write the checkpoint can write its checksum too
        from crrg.training.checkpoint import write_checksum

        write_checksum(path)
    return path


@pytest.mark.parametrize("with_checksum", [True, False])
def test_planted_malicious_checkpoint_is_refused_and_never_runs(tmp_path, with_checksum):
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    _plant(out / "checkpoints", marker, with_checksum)
    with pytest.raises(ConfigError, match="last.ckpt") as refused:
        run(out, resume=True)
    assert not marker.exists(), "the planted pickle ran"
    assert "\n" not in str(refused.value)
    assert ("not loaded" if with_checksum else "cannot be verified") in str(refused.value) or "failed verification" in str(refused.value)
    assert not (out / "model").exists()


def test_cli_refuses_a_planted_checkpoint_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    _plant(out / "checkpoints", marker, with_checksum=True)
    cmd = [sys.executable, "-m", "crrg", "train", "toy", "--config", str(REPO / "configs" / "toy.yaml"), "--out", str(out), "--resume"]
    for item in BASE:
        cmd += ["--set", item]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "last.ckpt" in result.stderr
    assert not marker.exists()


def test_every_checkpoint_has_a_checksum_and_pruned_ones_lose_theirs(finished):
    from crrg.training.checkpoint import checksum_path, file_sha256

    folder = finished / "checkpoints"
    ckpts = sorted(folder.rglob("*.ckpt"))
    assert {p.name for p in ckpts} >= {"last.ckpt", "step00000004.ckpt", "step00000008.ckpt"}
    for path in ckpts:
        assert checksum_path(path).read_text().split()[0] == file_sha256(path)
    orphans = [p for p in folder.rglob("*.sha256") if not p.with_suffix("").exists()]
    assert not orphans


def _flip_a_byte_inside(path: Path) -> None:
    """Damage the tensor data but keep the zip readable (the zip directory sits at the end)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_last_checkpoint_falls_back_to_a_verified_step_file(finished, tmp_path):
    import zipfile

    from crrg.training.engine import MODEL_DIR
    from tests.training.test_engine import assert_same_weights

    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    _flip_a_byte_inside(copy / "checkpoints" / "last.ckpt")
    assert zipfile.is_zipfile(copy / "checkpoints" / "last.ckpt")  # the old check let this through
    run(copy, resume=True)  # resumes from step00000008.ckpt: the same finished state
    assert_same_weights(copy / MODEL_DIR, finished / MODEL_DIR)


def test_resume_with_every_checkpoint_damaged_fails_in_one_line(finished, tmp_path):
    from crrg.training.checkpoint import CheckpointError

    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    shutil.rmtree(copy / "model")
    for path in (copy / "checkpoints").glob("*.ckpt"):
        _flip_a_byte_inside(path)
    with pytest.raises(CheckpointError, match="no usable checkpoint") as failed:
        run(copy, resume=True)
    assert "\n" not in str(failed.value)
    assert not (copy / "model").exists()  # nothing was trained from step 0


def test_a_verified_checkpoint_loads_weights_only(finished):
    from crrg.training.checkpoint import load_checkpoint_file

    state = load_checkpoint_file(finished / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 8 and "state_dict" in state
