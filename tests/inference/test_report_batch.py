"""``crrg report`` batch mode: folders and manifests, resumable JSONL, and torchrun sharding on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crrg.cli.main import app
from crrg.errors import InputError
from tests.image.films import write_chest_film

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_rrg(tmp_path_factory) -> Path:
    from crrg.models.registry import save_pretrained
    from tests.rrg.conftest import untrained_model

    folder = tmp_path_factory.mktemp("tiny_rrg")
    save_pretrained(untrained_model(), folder)
    return folder


@pytest.fixture
def studies(tmp_path) -> Path:
    root = tmp_path / "studies"
    root.mkdir()
    for i in range(5):
        write_chest_film(root / f"study{i}.png", i, (72, 64))  # passes the chest-radiograph gate
    return root


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_folder_batch_writes_jsonl_and_resumes(tiny_rrg, studies, tmp_path):
    out = tmp_path / "reports.jsonl"
    first = runner.invoke(app, ["-q", "report", str(studies / "study[0-1].png"), "--model", str(tiny_rrg), "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert [r["id"] for r in lines(out)] == ["study0", "study1"]
    again = runner.invoke(app, ["-q", "report", str(studies), "--model", str(tiny_rrg), "--out", str(out)])
    assert isinstance(again.exception, InputError) and "--resume" in str(again.exception)
    resumed = runner.invoke(app, ["report", str(studies), "--model", str(tiny_rrg), "--out", str(out), "--resume",
                                  "--workers", "0"])
    assert resumed.exit_code == 0, resumed.output
    assert "3 written, 2 already done" in resumed.output
    records = lines(out)
    assert [r["id"] for r in records] == [f"study{i}" for i in range(5)]
    assert all(r["findings"] and len(r["regions"]) == 29 for r in records)
    no_out = runner.invoke(app, ["report", str(studies), "--model", str(tiny_rrg)])
    assert isinstance(no_out.exception, InputError) and "--out" in str(no_out.exception)


def test_torchrun_shards_across_two_cpu_processes_and_merges(tiny_rrg, studies, tmp_path):
    out = tmp_path / "dist.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "crrg", "-q", "report", str(studies), "--model", str(tiny_rrg), "--out", str(out), "--workers", "0"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    records = lines(out)
    assert [r["id"] for r in records] == [f"study{i}" for i in range(5)]
    assert not list(tmp_path.glob("dist.rank*.jsonl"))  # parts merged and removed
    # the sharded output equals a single-process run (the model is deterministic with beam search)
    single = tmp_path / "single.jsonl"
    assert runner.invoke(app, ["-q", "report", str(studies), "--model", str(tiny_rrg), "--out", str(single)]).exit_code == 0
    strip = lambda r: {k: v for k, v in r.items() if k != "timings_ms"}  # noqa: E731
    assert [strip(r) for r in records] == [strip(r) for r in lines(single)]
