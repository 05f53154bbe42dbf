from __future__ import annotations

import json

import pytest

from crrg.errors import InputError
from crrg.inference.batch import collect_jobs, done_ids, merge_parts, part_path, run_batch, shard
from crrg.records import ImageRef, StudyRecord, write_manifest
from tests.image.films import write_chest_film
from tests.serve.serve_helpers import EchoGenerator, png_bytes


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    for i in range(3):
        write_chest_film(root / f"s{i}.png", i, (50, 50 + i))  # films: the chest-radiograph gate refuses flat gray
    write_chest_film(root / "sub" / "s9.png", 9, (64, 64))
    (root / "notes.txt").write_text("not an image")
    return root


def test_collect_from_folder_glob_and_manifest(folder, tmp_path):
    jobs = collect_jobs([str(folder)])
    assert [j.id for j in jobs] == ["s0", "s1", "s2", "sub/s9"]
    assert len(collect_jobs([str(folder / "s*.png")])) == 3
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, [StudyRecord(id="A", images=[ImageRef(str(folder / "s1.png"), "LATERAL"),
                                                          ImageRef(str(folder / "s0.png"), "PA")], indication="cough")])
    (job,) = collect_jobs([str(manifest)])
    assert job.views == ["PA", "LATERAL"] and job.indication == "cough"  # frontal first
    with pytest.raises(InputError, match="no such file"):
        collect_jobs([str(tmp_path / "missing")])
    with pytest.raises(InputError, match="not unique"):
        collect_jobs([str(folder / "s0.png"), str(folder / "s0.png")])


def test_shard_partitions_every_job_once(folder):
    jobs = collect_jobs([str(folder)])
    parts = [shard(jobs, r, 3) for r in range(3)]
    assert sorted(j.id for p in parts for j in p) == sorted(j.id for j in jobs)


def test_run_batch_writes_resumes_and_records_failures(folder, tmp_path):
    (folder / "broken.png").write_bytes(png_bytes()[:30])
    jobs = collect_jobs([str(folder)])
    out = tmp_path / "out.jsonl"
    generator = EchoGenerator()
    assert jobs[0].id == "broken"
    summary = run_batch(generator, jobs[1:3], out)
    assert summary.written == 2 and generator.calls == 2
    with pytest.raises(InputError, match="--resume"):
        run_batch(generator, jobs, out)
    with open(out, "a") as handle:  # a kill in the middle of a line
        handle.write('{"id": "s1", "rep')
    summary = run_batch(generator, jobs, out, resume=True, workers=0)
    assert summary.skipped == 2 and summary.written == 2 and summary.failed == 1
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["s0", "s1", "broken", "s2", "sub/s9"]
    assert "error" in lines[2] and "broken.png" in lines[2]["error"]
    assert "Indication echo" in lines[1]["findings"] and "Size 51x50" in lines[1]["findings"]
    assert done_ids(out) == {j.id for j in jobs} - {"broken"}  # a failed study is not done: --resume retries it


def test_merge_parts_orders_by_input_and_removes_parts(tmp_path):
    out = tmp_path / "out.jsonl"
    part_path(out, 0).write_text('{"id": "b"}\n')
    part_path(out, 1).write_text('{"id": "a"}\n{"id": "c"}\n')
    assert merge_parts(out, 2, ["a", "b", "c"]) == 3
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a", "b", "c"]
    assert not part_path(out, 0).exists()


def test_no_gate_reports_on_a_film_the_gate_refuses(tmp_path):
    """`crrg report --no-gate` (research on unusual films): the gate's statistics are skipped in batch
    and single-study mode alike; with the gate a flat gray image is one failed study."""
    from crrg.cli.report import load_study
    from crrg.errors import ImageError

    gray = tmp_path / "gray.png"
    gray.write_bytes(png_bytes(128, (64, 64)))
    jobs = collect_jobs([str(gray)])
    gated = run_batch(EchoGenerator(), jobs, tmp_path / "gated.jsonl")
    assert gated.failed == 1 and "chest radiograph" in gated.failures[0]["error"]
    ungated = run_batch(EchoGenerator(), jobs, tmp_path / "ungated.jsonl", gate=False)
    assert ungated.written == 1 and ungated.failed == 0
    with pytest.raises(ImageError):
        load_study([gray])
    assert load_study([gray], gate=False).images[0].shape == (64, 64)


class _ManyGenerator(EchoGenerator):
    """EchoGenerator with a batched entry, as crrg.generation.ReportEngine has."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.batches, self.fail = [], fail

    def generate_many(self, studies, options=None):
        self.batches.append([s.id for s in studies])
        if self.fail:
            raise RuntimeError("batched search broke")
        return [self.generate_report(s) for s in studies]


def test_batch_size_decodes_studies_together_and_falls_back_one_by_one(folder, tmp_path):
    jobs = collect_jobs([str(folder)])
    single = run_batch(EchoGenerator(), jobs, tmp_path / "single.jsonl")
    many = _ManyGenerator()
    batched = run_batch(many, jobs, tmp_path / "batched.jsonl", batch_size=3)
    assert many.batches == [["s0", "s1", "s2"]]  # the fourth study is left alone: no batch of one
    assert batched.written == single.written == 4
    assert (tmp_path / "batched.jsonl").read_text() == (tmp_path / "single.jsonl").read_text()
    broken = _ManyGenerator(fail=True)
    fallback = run_batch(broken, jobs, tmp_path / "fallback.jsonl", batch_size=2)
    assert broken.batches == [["s0", "s1"], ["s2", "sub/s9"]] and fallback.written == 4 and fallback.failed == 0
    with pytest.raises(InputError, match="batch size"):
        run_batch(EchoGenerator(), jobs, tmp_path / "zero.jsonl", batch_size=0)
