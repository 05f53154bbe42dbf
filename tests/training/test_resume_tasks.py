"""Kill -9 and resume of every training task ends bit-identical to an uninterrupted run.

Each task trains at toy size twice: once straight through (in this process) and once in a child
process that dies abruptly (``os._exit``, no cleanup: what kill -9 leaves) a step after a mid-epoch
checkpoint, then resumes here. Every tensor of the exported model must be equal. The tasks use what
makes this hard: image augmentation (clip, classifier), random prompt variants (blip), dropout,
warmup-cosine schedules, epoch boundaries after the resume point, loader workers, and for rrg one kill
inside every stage of the pipeline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crrg.training.config import load_config, set_in

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted(model_dir.rglob("*.safetensors")):
        rel = path.relative_to(model_dir)
        out.update({f"{rel}:{k}": v for k, v in load_file(str(path)).items()})
    return out


def assert_bit_identical(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta and ta.keys() == tb.keys()
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, f"{a}: {len(differ)} of {len(ta)} tensors differ, e.g. {differ[:3]}"


def run_and_die(task: str, config: dict, out: Path, die_after: int, *, stage: str | None = None, resume: bool = False) -> None:
    """Train in a child process that dies (exit code 17, no cleanup) once ``global_step >= die_after``."""
    spec = {"task": task, "config": config, "out": str(out), "resume": resume, "die_after": die_after, "die_in_stage": stage}
    spec_file = out.parent / f"{out.name}-{stage or 'run'}-spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "tests.training.crash", str(spec_file)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 17, f"exit {proc.returncode}: {proc.stderr[-3000:]}"


def kill_resume_compare(task: str, config: dict, tmp_path: Path, die_after: int) -> None:
    from crrg.training.engine import train

    straight = train(task, config, tmp_path / "straight", progress_bar=False)
    killed = tmp_path / "killed"
    run_and_die(task, config, killed, die_after)
    assert not (killed / "model").exists()
    resumed = train(task, config, killed, resume=True, progress_bar=False)
    assert json.loads((killed / "metrics.json").read_text())["resumed_from"]
    assert_bit_identical(resumed, straight)
    if (tmp_path / "straight" / "best-model").is_dir():
        assert_bit_identical(killed / "best-model", tmp_path / "straight" / "best-model")


# Checkpoints every 3 steps (mid-epoch at 4 batches an epoch) and the kill after step 5: steps 4-5
# are trained twice, across an epoch boundary, and more epochs follow. END_OF_EPOCH: checkpoints at the
# end of each epoch instead, the resume point where a dataset-held epoch counter went stale.
STEPS = ["trainer.max_steps=9", "trainer.max_epochs=null", "trainer.checkpoint_every_n_steps=3", "trainer.log_every_n_steps=1",
         "trainer.batch_size=4", "trainer.deterministic=true"]
END_OF_EPOCH = "trainer.checkpoint_every_n_steps=4"


def test_clip_with_augmentation_resumes_bit_identical(tmp_path):
    from tests.clip.conftest import make_dataset

    manifest = make_dataset(tmp_path / "data", n=24)  # 16 training pairs: 4 batches an epoch
    config = load_config(REPO / "configs/clip/tiny.yaml", [*STEPS, END_OF_EPOCH, "data.image_augment=true", "data.text_augment=true"])
    config = set_in(config, "data.manifest", str(manifest))
    kill_resume_compare("clip", config, tmp_path, die_after=5)


def test_classifier_with_augmentation_and_loader_workers_resumes_bit_identical(tmp_path):
    from tests.clip.conftest import make_dataset

    manifest = make_dataset(tmp_path / "data", n=24)
    config = load_config(REPO / "configs/classifier/finetune.yaml", [
        *STEPS, "data.image_augment=true", "trainer.num_workers=2", "trainer.monitor=val_loss", "trainer.val_check_interval=2",
        "model.labels=[Pleural Effusion, Cardiomegaly]", "model.overrides.image_encoder.image_size=32"])
    config = set_in(config, "data.manifest", str(manifest))
    kill_resume_compare("classifier", config, tmp_path, die_after=5)


@pytest.fixture(scope="module")
def blip_lm(tmp_path_factory) -> Path:
    from crrg.blip.language_model import LmPretrainConfig, pretrain_report_lm
    from tests.blip.conftest import REPORTS

    config = LmPretrainConfig(vocab_size=300, n_layer=1, n_embd=32, n_head=2, n_positions=160, epochs=1, batch_size=8)
    return pretrain_report_lm(REPORTS, tmp_path_factory.mktemp("blip_lm") / "lm", config)


def _blip_config(lm: Path, manifest: Path, stage: str, init_from: Path | None = None) -> dict:
    from tests.blip.conftest import TINY_OVERRIDES

    model = {"overrides": TINY_OVERRIDES, "lm_pretrained": str(lm)}
    if init_from is not None:
        model["init_from"] = str(init_from)
    return {**load_config(None, STEPS), "stage": stage, "model": model,
            "lora": {"vision": {"r": 2}} if stage == "1" else {"lm": {"r": 2}},
            "prompt": {"train_variants": ["none", "indication", "ground_truth"]}, "data": {"manifest": str(manifest)}}


@pytest.mark.parametrize("stage", ["1", "2"])
def test_blip_stage_with_random_prompt_variants_resumes_bit_identical(tmp_path, blip_lm, stage):
    from crrg.training.engine import train
    from tests.blip.conftest import write_tiny_manifest

    manifest = write_tiny_manifest(tmp_path / "data", n=12)  # 8 training studies: 2 batches an epoch
    init = None
    if stage == "2":
        init = train("blip", {**_blip_config(blip_lm, manifest, "1"), "trainer": {"max_steps": 2}}, tmp_path / "stage1",
                     progress_bar=False)
    kill_resume_compare("blip", _blip_config(blip_lm, manifest, stage, init), tmp_path, die_after=5)


def test_rrg_pipeline_killed_in_every_stage_resumes_bit_identical(tmp_path):
    from crrg.rrg.task import STAGES, train_stages
    from tests.rrg.conftest import TINY_CONFIG, make_studies

    manifest = make_studies(tmp_path / "data", n=10)  # 8 training studies: 4 batches an epoch
    per_stage = {"trainer": {"max_steps": 7, "max_epochs": None, "batch_size": 2, "checkpoint_every_n_steps": 3}}
    config = {"model": {"config": TINY_CONFIG}, "data": {"manifest": str(manifest)},
              "trainer": {"seed": 0, "max_steps": 1, "lr": 1e-3, "log_every_n_steps": 1, "deterministic": True},
              "stages": {stage: per_stage for stage in STAGES}}
    straight = train_stages(config, tmp_path / "straight", progress_bar=False)
    killed = tmp_path / "killed"
    for i, stage in enumerate(STAGES):
        run_and_die("rrg-stages", config, killed, die_after=5, stage=stage, resume=i > 0)
        assert not (killed / stage / "model").exists()
    resumed = train_stages(config, killed, resume=True, progress_bar=False)
    for stage in STAGES:
        assert_bit_identical(killed / stage / "model", tmp_path / "straight" / stage / "model")
    assert_bit_identical(resumed, straight)


def test_report_lm_pretraining_resumes_bit_identical(tmp_path):
    from tests.blip.conftest import REPORTS

    texts = [f"{r} Case {i}." for i, r in enumerate(REPORTS * 2)]  # 32 texts: 8 batches an epoch
    config = {**load_config(None, STEPS), "lm": {"vocab_size": 300, "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64,
                                                      "max_tokens": 48}, "data": {"texts": texts}}
    kill_resume_compare("report-lm", config, tmp_path, die_after=5)


@pytest.mark.parametrize("checkpoint_every", [3, 4], ids=["between-validations", "at-a-validation"])
def test_plateau_schedule_resumes_bit_identical(tmp_path, checkpoint_every):
    """RGRG's schedule (ReduceLROnPlateau per validation) keeps its best value, bad-validation count and the
    lowered LR across a kill. Validation every 2 batches; the kill comes after step 5 and the resume starts
    from step 3 (between validations) or step 4, whose checkpoint was written before that step's
    validation, which Lightning skips on resume: the schedule runs it again so it sees every value."""
    config = load_config(REPO / "configs" / "toy.yaml", [
        "trainer.max_steps=14", f"trainer.checkpoint_every_n_steps={checkpoint_every}", "trainer.val_check_interval=2",
        "trainer.log_every_n_steps=1", "trainer.deterministic=true", "trainer.schedule=plateau",
        "trainer.plateau_patience=0", "trainer.plateau_threshold=0.5"])  # any gain under 50 % halves the LR
    kill_resume_compare("toy", config, tmp_path, die_after=5)
    for run in ("straight", "killed"):
        last = torch.load(tmp_path / run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        state = last["callbacks"]["PlateauSchedule"]["schedulers"][0]
        assert last["optimizer_states"][0]["param_groups"][0]["lr"] < config["trainer"]["lr"] / 4  # dropped at least 3 times
        assert state["last_epoch"] == 7  # one step per validation (steps 2, 4, ..., 14), none lost or repeated
