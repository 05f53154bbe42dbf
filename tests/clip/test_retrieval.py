"""Image -> report retrieval: the nearest indexed study's report, through the crrg.reporting protocol."""

from __future__ import annotations

import numpy as np
import torch

from crrg.clip.data import load_image
from crrg.models import load_pretrained
from crrg.records import read_manifest
from crrg.reporting import GeneratedReport, StudyInput


def test_query_with_an_indexed_image_returns_that_studys_report(saved_tiny_clip, tiny_data):
    model = load_pretrained(saved_tiny_clip)
    train = read_manifest(tiny_data, split="train")
    assert model.retrieval is not None and len(model.retrieval) == len(train)
    record = train[5]
    study = StudyInput(images=[load_image(record.images[0].path)], views=["PA"], id="q")
    report = model.generate_report(study)
    assert isinstance(report, GeneratedReport)
    assert (report.findings, report.impression) == (record.findings, record.impression)
    assert "Pleural Effusion" in report.probabilities and set(report.labels) == set(report.probabilities)
    assert all(0.0 <= p <= 1.0 for p in report.probabilities.values())
    assert report.to_dict()["report"] == f"{record.findings} {record.impression}"


def test_index_round_trip_and_topk(tmp_path):
    from crrg.clip.retrieval import RetrievalIndex

    emb = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    index = RetrievalIndex(emb, [{"id": str(i), "findings": f"f{i}", "impression": ""} for i in range(5)])
    index.save(tmp_path)
    loaded = RetrievalIndex.load(tmp_path)
    assert torch.equal(loaded.embeddings, emb) and loaded.reports == index.reports
    sims, rows = loaded.search(emb[[3, 1]], k=2)
    assert rows[:, 0].tolist() == [3, 1] and sims.shape == (2, 2)
    assert RetrievalIndex.load(tmp_path / "nothing") is None


def test_clip_without_index_refuses_to_generate(tmp_path):
    import pytest

    from crrg.errors import ConfigError
    from crrg.models import create_model

    model = create_model("clip-tiny")
    with pytest.raises(ConfigError, match="no retrieval index"):
        model.generate_report(StudyInput(images=[np.zeros((64, 64), np.float32)], views=["PA"]))


def test_crrg_report_cli_works_with_a_clip_retrieval_model(saved_tiny_clip, tiny_data, tmp_path):
    import json as _json

    from typer.testing import CliRunner

    from crrg.cli.main import app

    from tests.image.films import write_chest_film

    # the fixture's noise images are refused by the chest-radiograph gate, so the query is a film; the
    # exact-match retrieval of an indexed image is tested above, through the generator protocol
    film = write_chest_film(tmp_path / "film.png")
    indexed = {(r.findings, r.impression) for r in read_manifest(tiny_data, split="train")}
    result = CliRunner().invoke(app, ["--quiet", "report", str(film), "--model", str(saved_tiny_clip), "--format", "json"])
    assert result.exit_code == 0, result.output
    out = _json.loads(result.stdout)
    assert (out["findings"], out["impression"]) in indexed
