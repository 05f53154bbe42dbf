"""Who starts the training processes: crrg itself, or a cluster launcher (torchrun, SLURM's srun).

``crrg train --devices N`` on one machine starts its own N worker processes
(:func:`launch_workers`). On several nodes that cannot work: every node must run
its own processes, and something outside crrg must start them and tell each one its rank. Two
launchers are understood, the two Lightning's cluster environments take over from:

- **torchrun** (``python -m torch.distributed.run``): sets ``TORCHELASTIC_RUN_ID``, ``RANK``,
  ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` in each process
  (Lightning's ``TorchElasticEnvironment``);
- **SLURM** (``srun`` inside an allocation): sets ``SLURM_NTASKS``, ``SLURM_PROCID``,
  ``SLURM_LOCALID``, ``SLURM_NODEID`` (Lightning's ``SLURMEnvironment``; a job named ``bash`` or
  ``interactive`` is an interactive allocation and is not treated as a launch, as in Lightning). A job
  of one task (``sbatch --ntasks=1 --gpus=4`` running ``crrg train --devices 4`` without srun) is not a
  launch either: crrg starts its own workers there, without the variable that would make Lightning in
  them believe srun had started a one-process job.

Under a launcher each process is one rank: the engine trains it directly, with ``devices`` (processes
per node) and ``num_nodes`` passed to Lightning, which checks them against the launcher's numbers.
The world size must be ``devices * num_nodes``; a mismatch is a :class:`ConfigError` here, before any
model is built, rather than a hang in the process-group rendezvous.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from crrg.errors import ConfigError

WORKER_ENV = "CRRG_DDP_WORKER"
TORCHRUN = "torchrun"
SLURM = "slurm"
# An interactive SLURM allocation (salloc; srun --pty bash) is not a launch (Lightning's rule too).
SLURM_INTERACTIVE_JOB_NAMES = ("bash", "interactive")
SLURM_TASKS_VAR = "SLURM_NTASKS"  # what Lightning's SLURMEnvironment.detect() looks for


@dataclass(frozen=True)
class ExternalLaunch:
    """This process is one rank of a run started by ``launcher``."""

    launcher: str
    world_size: int
    rank: int
    local_rank: int
    node_rank: int


def _int(env: Mapping[str, str], name: str, default: int = 0) -> int:
    value = env.get(name, "")
    try:
        return int(value) if value != "" else default
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer (set by the cluster launcher?)") from None


def detect_launch(env: Mapping[str, str] | None = None) -> ExternalLaunch | None:
    """The launcher that started this process, or None when crrg was started directly."""
    env = os.environ if env is None else env
    if env.get("TORCHELASTIC_RUN_ID"):  # what torch.distributed.is_torchelastic_launched() checks
        return ExternalLaunch(TORCHRUN, _int(env, "WORLD_SIZE", 1), _int(env, "RANK"), _int(env, "LOCAL_RANK"),
                              _int(env, "GROUP_RANK"))
    if SLURM_TASKS_VAR in env and env.get("SLURM_JOB_NAME") not in SLURM_INTERACTIVE_JOB_NAMES \
            and _int(env, SLURM_TASKS_VAR, 1) > 1:
        return ExternalLaunch(SLURM, _int(env, SLURM_TASKS_VAR, 1), _int(env, "SLURM_PROCID"), _int(env, "SLURM_LOCALID"),
                              _int(env, "SLURM_NODEID"))
    return None


def check_processes(devices: int, num_nodes: int, launch: ExternalLaunch | None) -> None:
    """Refuse settings that cannot start: several nodes without a launcher, or a launcher whose
    process count is not ``devices * num_nodes``."""
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        raise ConfigError(f"devices must be a positive integer, got {devices!r}")
    if not isinstance(num_nodes, int) or isinstance(num_nodes, bool) or num_nodes < 1:
        raise ConfigError(f"num_nodes must be a positive integer, got {num_nodes!r}")
    if launch is None:
        if num_nodes > 1:
            raise ConfigError(f"--num-nodes {num_nodes} needs a launcher on every node: start crrg with torchrun "
                              f"(--nnodes {num_nodes} --nproc-per-node {devices}) or srun (see docs/training.md)")
        return
    expected = devices * num_nodes
    if launch.world_size != expected:
        hint = ("torchrun --nnodes NODES --nproc-per-node DEVICES" if launch.launcher == TORCHRUN
                else "#SBATCH --nodes NODES --ntasks-per-node DEVICES")
        raise ConfigError(f"{launch.launcher} started {launch.world_size} process(es) but --devices {devices} x "
                          f"--num-nodes {num_nodes} makes {expected}; pass the launcher's numbers ({hint})")


def is_rank_zero(env: Mapping[str, str] | None = None) -> bool:
    """True in the process that writes run-level files (config.json): crrg's own launch, or global rank 0
    of an external one (srun sets SLURM_PROCID, not RANK)."""
    env = os.environ if env is None else env
    launch = detect_launch(env)
    if launch is not None:
        return launch.rank == 0
    return all(_int(env, var) == 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


class WorkerFailed(RuntimeError):
    """A DDP worker process died (killed, crashed or raised); the run can be continued with resume."""

    def __init__(self, rank: int, exit_code: int) -> None:
        super().__init__(f"training worker rank {rank} exited with code {exit_code}; the others were stopped")
        self.rank, self.exit_code = rank, exit_code


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_workers(task: str, out: Path, devices: int, resume_from: Path | None, progress_bar: bool) -> None:
    """Run rank 0..devices-1 as fresh processes of crrg.training.worker; stop all if one fails."""
    import subprocess
    import sys

    port = _free_port()
    procs: list[subprocess.Popen] = []
    try:
        for rank in range(devices):
            env = {
                **{k: v for k, v in os.environ.items() if k != SLURM_TASKS_VAR},  # see the module docstring
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "WORLD_SIZE": str(devices),
                "NODE_RANK": "0",
                "LOCAL_RANK": str(rank),
                "RANK": str(rank),
                WORKER_ENV: "1",
            }
            cmd = [sys.executable, "-m", "crrg.training.worker", task, str(out), str(devices)]
            if resume_from is not None:
                cmd += ["--resume-from", str(resume_from)]
            if not progress_bar:
                cmd.append("--no-progress")
            procs.append(subprocess.Popen(cmd, env=env))
        while True:
            codes = [p.poll() for p in procs]
            failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                raise WorkerFailed(*failed[0])
            if all(code == 0 for code in codes):
                return
            time.sleep(0.1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.time() + 10
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
