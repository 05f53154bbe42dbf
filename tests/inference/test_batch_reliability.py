"""Batch reliability (issue 23 items 7, 12, 13, 15): one bad study never ends a batch, failures are
retried on --resume, one writer per output, signals give a summary, no worker outlives the batch, and
unwritable outputs or torn lines are one clear error."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from crrg.errors import InputError
from crrg.inference import batch
from crrg.inference.batch import collect_jobs, output_lock, read_output, run_batch, view_from_name
from tests.image.films import chest_film_png, write_chest_film
from tests.serve.serve_helpers import EchoGenerator, png_bytes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(4):
        write_chest_film(root / f"s{i}.png", i, (50, 50 + i))  # films: the chest-radiograph gate refuses flat gray
    return root


class Poisoned(EchoGenerator):
    """Crashes (as the detector did on a 4000x10 image) on the studies named in ``bad``."""

    def __init__(self, bad: set[str]):
        super().__init__()
        self.bad = bad

    def generate_report(self, study, **options):
        if study.id in self.bad:
            raise RuntimeError("shape '[1, 29, -1]' is invalid")
        return super().generate_report(study, **options)


def _ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in out.read_text().splitlines()]


def test_a_study_the_generator_crashes_on_is_recorded_and_retried_on_resume(folder, tmp_path):
    jobs = collect_jobs([str(folder)])
    out = tmp_path / "out.jsonl"
    summary = run_batch(Poisoned({"s1"}), jobs, out, workers=0)
    assert summary.written == 3 and summary.failed == 1 and "RuntimeError" in summary.failures[0]["error"]
    again = run_batch(EchoGenerator(), jobs, out, resume=True, workers=0)  # the model was fixed
    assert again.skipped == 3 and again.written == 1 and again.failed == 0
    assert sorted(_ids(out)) == ["s0", "s1", "s2", "s3"]  # each id once: the error line was replaced
    assert read_output(out) == {"s0", "s1", "s2", "s3"}


def test_a_torn_line_in_the_middle_is_one_clear_error(folder, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "s0", "report": "x"}\n{"id": "s1", "rep\n{"id": "s2", "report": "y"}\n')
    with pytest.raises(InputError, match="line 2 is not a complete study line"):
        run_batch(EchoGenerator(), collect_jobs([str(folder)]), out, resume=True, workers=0)


def test_two_runs_on_one_output_do_not_both_write(folder, tmp_path):
    out = tmp_path / "out.jsonl"
    with output_lock(out):
        with pytest.raises(InputError, match="another crrg report run is writing"):
            run_batch(EchoGenerator(), collect_jobs([str(folder)]), out, resume=True, workers=0)
    assert not out.exists()
    assert run_batch(EchoGenerator(), collect_jobs([str(folder)]), out, resume=True, workers=0).written == 4


def test_unwritable_outputs_are_one_clear_error(folder, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(InputError, match="cannot create the folder"):
        run_batch(EchoGenerator(), collect_jobs([str(folder)]), tmp_path / "a-file" / "out.jsonl", workers=0)

    real_open = open

    class Full:
        def __new__(cls, path, *a, **k):
            return real_open(path, *a, **k) if str(path).endswith(".lock") else super().__new__(cls)

        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(batch, "open", Full, raising=False)
    with pytest.raises(InputError, match="No space left on device.*--resume"):
        run_batch(EchoGenerator(), collect_jobs([str(folder)]), tmp_path / "out.jsonl", workers=0)


def test_folder_batches_know_lateral_films(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for name in ("a_frontal.png", "a_lateral.png", "b-LAT.png", "c.png"):
        (root / name).write_bytes(png_bytes(50))
    views = {j.id: j.views[0] for j in collect_jobs([str(root)])}
    assert views == {"a_frontal": "PA", "a_lateral": "LATERAL", "b-LAT": "LATERAL", "c": "unknown"}
    assert view_from_name("study_pa.dcm") == "PA" and view_from_name("lateral") == "LATERAL"


def test_a_lateral_film_alone_is_a_failed_study_not_a_frontal_report(tmp_path):
    from crrg.models.registry import save_pretrained
    from crrg.generation import load_generator
    from tests.rrg.conftest import untrained_model

    root = tmp_path / "imgs"
    root.mkdir()
    for i, name in enumerate(("x_frontal.png", "x_lateral.png")):
        write_chest_film(root / name, i, (64, 60))  # films pass the chest-radiograph gate
    engine = load_generator(save_pretrained(untrained_model(), tmp_path / "m"), device="cpu")
    summary = run_batch(engine, collect_jobs([str(root)]), tmp_path / "out.jsonl", workers=0)
    assert summary.written == 1 and summary.failures[0]["id"] == "x_lateral"
    assert "only lateral" in summary.failures[0]["error"]


def _script(tmp_path: Path, delay: float) -> Path:
    """A batch over 40 images with a slow generator and one DataLoader worker, in its own process."""
    images = tmp_path / "imgs"
    images.mkdir(exist_ok=True)
    for i in range(40):
        write_chest_film(images / f"s{i:02d}.png", i, (1400, 1500))  # decoded 8 MB: fills the queue pipe
    script = tmp_path / "run.py"
    script.write_text(f"""
import json, sys
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from crrg.inference.batch import collect_jobs, run_batch
from tests.serve.serve_helpers import EchoGenerator
summary = run_batch(EchoGenerator(delay_s={delay}), collect_jobs([{str(images)!r}]), Path({str(tmp_path / 'out.jsonl')!r}),
                    workers=1)
print(json.dumps(summary.as_dict()), flush=True)
sys.exit(143 if summary.interrupted == "SIGTERM" else 0)
""")
    return script


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _start(tmp_path: Path, delay: float):
    marker = f"CRRG_BATCH_TEST={uuid.uuid4().hex}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1], "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(_script(tmp_path, delay))], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = tmp_path / "out.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (out.exists() and out.read_text().count("\n") >= 2):
        time.sleep(0.1)
    assert out.exists(), proc.stderr.read() if proc.poll() is not None else "no output"
    return proc, marker


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_sigterm_stops_with_a_summary_and_kill_9_leaves_no_worker(tmp_path):
    (tmp_path / "term").mkdir()
    proc, marker = _start(tmp_path / "term", delay=0.3)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["interrupted"] == "SIGTERM" and summary["written"] >= 2
    time.sleep(1)
    assert _processes_with(marker) == []

    (tmp_path / "kill").mkdir()
    proc, marker = _start(tmp_path / "kill", delay=0.3)
    assert len(_processes_with(marker)) == 2  # the batch and its decoding worker
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.time() + 10
    while _processes_with(marker) and time.time() < deadline:
        time.sleep(0.2)
    assert _processes_with(marker) == [], "a DataLoader worker outlived the batch"


def test_the_cli_exits_non_zero_when_studies_failed_and_retries_them(tmp_path):
    from typer.testing import CliRunner

    from crrg.cli.main import app
    from crrg.models.registry import save_pretrained
    from tests.rrg.conftest import untrained_model

    model = save_pretrained(untrained_model(), tmp_path / "m")
    root = tmp_path / "imgs"
    root.mkdir()
    write_chest_film(root / "good.png", 0, (64, 60))
    (root / "broken.png").write_bytes(png_bytes()[:30])
    out = tmp_path / "out.jsonl"
    args = ["-q", "report", str(root), "--model", str(model), "--out", str(out), "--workers", "0"]
    assert CliRunner().invoke(app, args).exit_code == 1
    (root / "broken.png").write_bytes(chest_film_png(1, (64, 60)))
    assert CliRunner().invoke(app, [*args, "--resume"]).exit_code == 0
    assert sorted(_ids(out)) == ["broken", "good"] and "error" not in out.read_text()
