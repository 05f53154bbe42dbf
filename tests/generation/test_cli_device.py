"""--device on crrg report, classify and evaluate-classifier: one rule, a clear error without CUDA."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from crrg.cli.main import app
from crrg.generation import GenerationError
from tests.image.films import write_chest_film

runner = CliRunner()


@pytest.fixture()
def png(tmp_path):
    path = tmp_path / "f.png"
    write_chest_film(path, 0, (64, 60))  # a film: the chest-radiograph gate refuses noise
    return path


@pytest.fixture()
def saved_classifier(tmp_path):
    from crrg.models import create_model, save_pretrained

    return save_pretrained(create_model("classifier-resnet18", labels=["Edema"], image_encoder={"image_size": 32}),
                           tmp_path / "clf")


def test_device_flag_runs_on_cpu_and_refuses_absent_cuda(saved_rrg, saved_classifier, png, monkeypatch):
    out = runner.invoke(app, ["-q", "report", str(png), "--model", str(saved_rrg), "--device", "cpu",
                              "--joint", "off", "--beams", "2"])
    assert out.exit_code == 0, out.output
    assert runner.invoke(app, ["-q", "classify", str(png), "--model", str(saved_classifier), "--device", "cpu"]).exit_code == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for args in (["report", str(png), "--model", str(saved_rrg)], ["classify", str(png), "--model", str(saved_classifier)],
                 ["evaluate-classifier", "--model", str(saved_classifier), "--data", str(png.parent)]):
        result = runner.invoke(app, ["-q", *args, "--device", "cuda"])
        assert isinstance(result.exception, GenerationError) and "no GPU" in str(result.exception), args


def test_a_bad_decoding_flag_fails_before_the_model_is_loaded(png, monkeypatch):
    import crrg.generation.engine as engine

    monkeypatch.setattr(engine, "load_generator", lambda *a, **k: pytest.fail("model loaded"))
    result = runner.invoke(app, ["-q", "report", str(png), "--joint", "veto"])
    assert isinstance(result.exception, GenerationError) and "joint='veto'" in str(result.exception)
