"""Launching: crrg's own workers for ``--devices N``, or one rank of a torchrun / srun launch (several nodes).

Under a launcher the engine must not start workers of its own (they would form a second, wrong
process group): it trains the launched rank directly and passes devices/num_nodes to Lightning. A
2-process torchrun of the toy task on CPU (gloo) must end with exactly the weights of crrg's own
2-worker run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crrg.errors import ConfigError
from crrg.training.launch import SLURM, TORCHRUN, check_processes, detect_launch, is_rank_zero

REPO = Path(__file__).resolve().parents[2]
TORCHRUN_ENV = {"TORCHELASTIC_RUN_ID": "abc", "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "GROUP_RANK": "1",
                "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
SRUN_ENV = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_NAME": "rgrg"}
LAUNCH_VARS = ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_NAME", "RANK", "LOCAL_RANK", "NODE_RANK",
               "WORLD_SIZE", "GROUP_RANK")


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher variables from the machine running the tests."""
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_launchers_are_detected_from_their_environment():
    assert detect_launch({}) is None
    assert detect_launch({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}) is None  # crrg's own workers: not a launcher
    torchrun = detect_launch(TORCHRUN_ENV)
    assert (torchrun.launcher, torchrun.world_size, torchrun.rank, torchrun.local_rank, torchrun.node_rank) == (TORCHRUN, 4, 3, 1, 1)
    srun = detect_launch(SRUN_ENV)
    assert (srun.launcher, srun.world_size, srun.rank, srun.local_rank, srun.node_rank) == (SLURM, 8, 5, 1, 1)
    for name in ("bash", "interactive"):  # salloc / srun --pty bash: an allocation, not a launch (Lightning's rule)
        assert detect_launch({**SRUN_ENV, "SLURM_JOB_NAME": name}) is None
    # one task without srun (sbatch --ntasks=1 --gpus=4; crrg train --devices 4): crrg starts its own workers
    assert detect_launch({**SRUN_ENV, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        detect_launch({**TORCHRUN_ENV, "WORLD_SIZE": "four"})


def test_only_global_rank_zero_writes_run_files():
    assert is_rank_zero({}) and is_rank_zero({"RANK": "0", "LOCAL_RANK": "0"})
    assert not is_rank_zero({"RANK": "1", "LOCAL_RANK": "1"})
    assert not is_rank_zero(TORCHRUN_ENV)
    # srun sets SLURM_PROCID, not RANK: rank 5 of an srun launch must not write config.json (it did before)
    assert not is_rank_zero(SRUN_ENV)
    assert is_rank_zero({**SRUN_ENV, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"})


def test_device_and_node_counts_are_checked():
    check_processes(2, 1, None)
    check_processes(2, 2, detect_launch(TORCHRUN_ENV))
    check_processes(4, 2, detect_launch(SRUN_ENV))
    with pytest.raises(ConfigError, match="torchrun.*srun"):
        check_processes(1, 2, None)  # several nodes need a launcher on every node
    with pytest.raises(ConfigError, match=r"torchrun started 4 process\(es\) but --devices 2 x --num-nodes 1 makes 2"):
        check_processes(2, 1, detect_launch(TORCHRUN_ENV))
    with pytest.raises(ConfigError, match="ntasks-per-node"):
        check_processes(1, 1, detect_launch(SRUN_ENV))
    for devices, nodes in ((0, 1), (1, 0), (1, "2"), (True, 1), (1, 1.5)):
        with pytest.raises(ConfigError, match="positive integer"):
            check_processes(devices, nodes, None)


def test_under_a_launcher_the_engine_trains_the_rank_itself(clean_env, tmp_path):
    from crrg.training import engine
    from crrg.training.config import load_config

    calls: list[dict] = []
    clean_env.setattr(engine, "fit", lambda *args, **kwargs: calls.append(kwargs))
    clean_env.setattr(engine, "launch_workers", lambda *args, **kwargs: pytest.fail("started workers under torchrun"))
    for var, value in {**TORCHRUN_ENV, "WORLD_SIZE": "4", "RANK": "0", "GROUP_RANK": "0"}.items():
        clean_env.setenv(var, value)
    config = load_config(REPO / "configs" / "toy.yaml", ["trainer.max_steps=1"])
    engine.train("toy", config, tmp_path / "run", devices=2, num_nodes=2, progress_bar=False)
    assert [(c["devices"], c["num_nodes"]) for c in calls] == [(2, 2)]
    assert (tmp_path / "run" / "config.json").is_file()  # written by global rank 0


def test_own_workers_in_a_one_task_slurm_job_do_not_look_srun_launched(clean_env, tmp_path):
    """sbatch --ntasks=1 --gpus=4 + crrg train --devices 4: crrg's workers must not carry SLURM_NTASKS,
    or Lightning in each would take SLURM's one-process world instead of crrg's rank and world size."""
    import subprocess as sp

    from crrg.training import launch

    started: list[dict] = []

    class Done:
        def __init__(self, cmd, env):
            started.append(env)

        def poll(self):
            return 0

        def wait(self, timeout=None):
            return 0

    clean_env.setattr(sp, "Popen", Done)
    clean_env.setenv("SLURM_NTASKS", "1")
    clean_env.setenv("SLURM_JOB_ID", "42")
    assert detect_launch() is None
    launch.launch_workers("toy", tmp_path, 2, None, False)
    assert [e["RANK"] for e in started] == ["0", "1"] and all(e["WORLD_SIZE"] == "2" for e in started)
    assert all("SLURM_NTASKS" not in e and e["SLURM_JOB_ID"] == "42" for e in started)


def test_several_nodes_without_a_launcher_is_refused(clean_env, tmp_path):
    from crrg.training.config import load_config
    from crrg.training.engine import train

    with pytest.raises(ConfigError, match="torchrun"):
        train("toy", load_config(REPO / "configs" / "toy.yaml", ["trainer.max_steps=1"]), tmp_path / "r", num_nodes=2)
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    result = subprocess.run([sys.executable, "-m", "crrg", "train", "toy", "--config", str(REPO / "configs" / "toy.yaml"),
                             "--out", str(tmp_path / "cli"), "--num-nodes", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--num-nodes 2 needs a launcher on every node: start crrg with torchrun" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "cli").exists()


def test_cli_accelerator_and_precision_flags_set_the_trainer_section(clean_env, tmp_path):
    from typer.testing import CliRunner

    from crrg.cli.main import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["--quiet", "train", "toy", "--config", str(REPO / "configs" / "toy.yaml"), "--out", str(out),
                                      "--accelerator", "cpu", "--precision", "auto", "--set", "trainer.max_steps=2",
                                      "--set", "trainer.precision=bf16-mixed"])
    assert result.exit_code == 0, result.output
    trainer = json.loads((out / "config.json").read_text())["trainer"]
    assert trainer["accelerator"] == "cpu" and trainer["precision"] == "auto"  # the flag wins over --set
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 2


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _free_port() -> int:
    from crrg.training.launch import _free_port as free

    return free()


TORCHRUN_SETTINGS = ["trainer.max_steps=12", "trainer.checkpoint_every_n_steps=4", "trainer.log_every_n_steps=2",
                     "trainer.monitor=val_loss"]


@pytest.mark.slow
def test_torchrun_two_processes_match_crrgs_own_two_workers(clean_env, tmp_path):
    """``torchrun --nproc_per_node 2 -m crrg train ... --devices 2`` on CPU (gloo): no extra workers, rank 0
    writes the run folder, and the weights equal those of ``crrg train --devices 2`` bit for bit."""
    from crrg.training.config import load_config
    from crrg.training.engine import train

    own = tmp_path / "own"
    started = time.perf_counter()
    train("toy", load_config(REPO / "configs" / "toy.yaml", TORCHRUN_SETTINGS), own, devices=2, progress_bar=False)
    own_seconds = time.perf_counter() - started

    out = tmp_path / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1", "--master_port", str(_free_port()),
           "-m", "crrg", "--quiet", "train", "toy", "--config", str(REPO / "configs" / "toy.yaml"), "--out", str(out), "--devices", "2"]
    for item in TORCHRUN_SETTINGS:
        cmd += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    torchrun_seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CRRG_DDP_WORKER" not in result.stderr

    summary = json.loads((out / "metrics.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 12
    assert sorted(p.name for p in (out / "checkpoints").glob("*.ckpt")) == ["last.ckpt", "step00000008.ckpt", "step00000012.ckpt"]
    ours, theirs = _weights(own / "model"), _weights(out / "model")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    print(f"toy 12 steps, 2 processes: crrg --devices 2 {own_seconds:.1f} s, torchrun {torchrun_seconds:.1f} s (wall, with start-up)")
