"""A saved model is one declared artifact: config.json lists its files, the hub fetches that set, a
damaged or half-copied folder fails in one line, and no config runs code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from crrg.errors import ConfigError, InputError
from crrg.models.registry import CONFIG_FILE, WEIGHTS_FILE, build_model, load_pretrained, save_pretrained


@pytest.fixture(scope="module")
def saved_generator(tmp_path_factory) -> Path:
    """A tiny rrg model with a finding classifier and a learned order: every kind of side file."""
    from crrg.models import create_model
    from crrg.rrg import joint
    from crrg.rrg.ordering import SentenceOrder
    from tests.rrg.conftest import untrained_model

    model = untrained_model()
    joint.attach_classifier(model, create_model("classifier-resnet18", labels=["Edema"], image_encoder={"image_size": 32}))
    model.sentence_order = SentenceOrder({("Edema=1", "Cardiomegaly=0"): 2})
    return save_pretrained(model, tmp_path_factory.mktemp("artifact") / "model")


def test_config_lists_every_file_of_the_folder(saved_generator):
    config = json.loads((saved_generator / CONFIG_FILE).read_text())
    on_disk = sorted(p.relative_to(saved_generator).as_posix() for p in saved_generator.rglob("*")
                     if p.is_file() and p.name != CONFIG_FILE or p.parent != saved_generator and p.is_file())
    assert config["files"] == on_disk
    for needed in ("model.safetensors", "thresholds.json", "decoding.json", "sentence_order.json",
                   "tokenizer/tokenizer.json", "classifier/model.safetensors", "classifier/config.json"):
        assert needed in config["files"]
    assert config["children"] == {"finding_classifier": "classifier"}
    assert "joint" not in config and "decoding" not in config  # decoding defaults live in decoding.json


def _fake_hub(monkeypatch, repo: Path, calls: list):
    """huggingface_hub.snapshot_download served from a local folder laid out like the hub repo: only
    the files matching allow_patterns are copied into a fresh cache folder, as the hub does."""
    import fnmatch
    import itertools

    import huggingface_hub

    counter = itertools.count()

    def snapshot_download(repo_id, allow_patterns=None, **kwargs):
        calls.append((repo_id, allow_patterns))
        out = repo.parent / f"cache{next(counter)}"
        for path in repo.rglob("*"):
            rel = path.relative_to(repo).as_posix()
            if path.is_file() and (allow_patterns is None or any(fnmatch.fnmatch(rel, p) for p in allow_patterns)):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, out / rel)
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)


def test_a_generator_loads_from_a_hub_layout_folder_with_all_its_side_files(saved_generator, tmp_path, monkeypatch):
    import numpy as np

    from crrg.reporting import StudyInput

    repo = tmp_path / "hub" / "repo"
    shutil.copytree(saved_generator, repo)
    (repo / "unrelated.bin").write_bytes(b"not part of the model")
    calls = []
    _fake_hub(monkeypatch, repo, calls)
    model = load_pretrained("someone/crrg-tiny")
    assert calls[0] == ("someone/crrg-tiny", [CONFIG_FILE])  # config.json first, then what it lists
    assert "tokenizer/tokenizer.json" in calls[1][1] and "classifier/model.safetensors" in calls[1][1]
    assert model.tokenizer is not None and model.finding_classifier is not None and model.sentence_order
    local = load_pretrained(saved_generator)
    study = StudyInput(images=[np.random.default_rng(0).random((48, 48), dtype=np.float32)], views=["PA"])
    assert model.generate_report(study).report == local.generate_report(study).report


def test_a_half_copied_or_damaged_folder_fails_in_one_line(saved_generator, tmp_path):
    broken = tmp_path / "m"
    shutil.copytree(saved_generator, broken)
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(InputError, match="lacks 3 file.*tokenizer/"):
        load_pretrained(broken)
    shutil.copytree(saved_generator, tmp_path / "c")
    (tmp_path / "c" / CONFIG_FILE).write_text('{"family": "rrg", ')
    with pytest.raises(InputError, match="config.json is not valid JSON"):
        load_pretrained(tmp_path / "c")
    shutil.copytree(saved_generator, tmp_path / "t")
    weights = tmp_path / "t" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(InputError, match="damaged or truncated"):
        load_pretrained(tmp_path / "t")


def test_absurd_sizes_are_refused_before_anything_is_allocated():
    from tests.rrg.conftest import TINY_CONFIG

    config = json.loads(json.dumps(TINY_CONFIG))
    config["language"]["n_layer"] = 100000
    with pytest.raises(ConfigError, match="rrg.language.n_layer is 100000"):
        build_model(config)
    config["language"].update(n_layer=90, n_embd=8192, n_head=64)
    with pytest.raises(ConfigError, match="billion parameters"):
        build_model(config)
    with pytest.raises(ConfigError, match=r"rrg.heads.region_hiden"):
        build_model({**TINY_CONFIG, "heads": {"region_hiden": 3}})
    with pytest.raises(ConfigError, match="blip.qformer.layers must be an integer"):
        build_model({"family": "blip", "qformer": {"layers": "2"}})


def test_no_config_runs_code(monkeypatch):
    import os

    ran = []
    monkeypatch.setattr(os, "getpid", lambda: ran.append(1) or 1)
    for vision in ({"type": "external", "factory": "os:getpid"}, {"type": "resnet18", "factory": "os:getpid"}):
        with pytest.raises(ConfigError, match="may not name code"):
            from crrg.blip.vision import build_image_encoder

            build_image_encoder(32, vision)
    assert ran == []


def test_a_failed_download_while_building_is_a_clear_error(monkeypatch):
    from urllib.error import URLError

    import torch.hub

    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    from crrg.models import create_model

    with pytest.raises(ConfigError, match="downloads pretrained weights.*pretrained_backbone: false"):
        create_model("rrg-resnet50-gpt2", detector={"image_size": 64}, language={"init": None})


def test_children_are_modules_seen_by_to_state_dict_and_eval(saved_generator):
    model = load_pretrained(saved_generator)
    names = dict(model.named_children())
    assert "finding_classifier" in names
    keys = model.state_dict().keys()
    assert any(k.startswith("finding_classifier.image_encoder.") for k in keys)
    model.train()
    assert model.training and not model.finding_classifier.training  # a frozen child stays in eval mode
    model.to(torch.float64)
    assert next(model.finding_classifier.parameters()).dtype == torch.float64
    assert not any(p.requires_grad for p in model.finding_classifier.parameters())


def test_models_info_prints_the_typed_config_and_decoding_defaults(saved_generator, tmp_path):
    from typer.testing import CliRunner

    from crrg.cli.main import app

    out = CliRunner().invoke(app, ["models", "info", "rrg-mobilenet-gpt2"])
    assert out.exit_code == 0, out.output
    typed = json.loads(out.stdout)["typed_config"]
    assert typed["language"]["dropout"] == 0.1 and typed["global_sentences"] is True  # defaults filled in
    saved = json.loads(CliRunner().invoke(app, ["models", "info", str(saved_generator)]).stdout)
    assert saved["decoding"]["joint"] == "condition" and "tokenizer/tokenizer.json" in saved["files"]
    bad = tmp_path / "bad"
    shutil.copytree(saved_generator, bad)
    config = json.loads((bad / CONFIG_FILE).read_text())
    config["language"]["n_layr"] = 2
    (bad / CONFIG_FILE).write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["models", "info", str(bad)])  # the entry point prints it as one line, exit 2
    assert isinstance(result.exception, ConfigError) and "rrg.language.n_layr" in str(result.exception)


def test_a_record_s_frontal_image_follows_the_one_rule():
    from crrg.records import ImageRef, StudyRecord

    record = StudyRecord(id="x", images=[ImageRef("l.png", "LATERAL"), ImageRef("u.png", "unknown")])
    assert record.frontal_image().path == "u.png"
    assert StudyRecord(id="y", images=[ImageRef("l.png", "LL")]).frontal_image() is None
