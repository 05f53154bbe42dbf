"""Batch report generation over a folder, a glob or a manifest; resumable; sharded under torchrun.

Output is JSONL written as it goes, one line per study, flushed after every line. A kill can leave
at most one partial last line, which :func:`done_ids` drops (by truncating it away) before a
``--resume`` run skips every id already written.

Under ``torchrun --nproc_per_node N -m crrg report ...`` each rank takes every N-th study (ordered
by id, so the split is the same on every node), writes ``OUT.rank{r}.jsonl``, and rank 0 merges the
parts into OUT after a barrier (gloo process group: works on CPU-only nodes too).
"""

from __future__ import annotations

import glob as globlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from crrg.errors import CrrgError, InputError
from crrg.io import atomic_open
from crrg.observations import FRONTAL_VIEWS
from crrg.reporting import StudyInput

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


@dataclass
class StudyJob:
    id: str
    paths: list[str]
    views: list[str]
    indication: str = ""


@dataclass
class BatchSummary:
    total: int = 0
    skipped: int = 0
    written: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "skipped_already_done": self.skipped, "written": self.written,
                "failed": self.failed, "seconds": round(self.seconds, 2),
                "studies_per_second": round(self.written / self.seconds, 3) if self.seconds else None}


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def jobs_from_manifest(path: Path, split: str | None = None) -> list[StudyJob]:
    from crrg.records import read_manifest

    jobs = []
    for record in read_manifest(path, split=split):
        if not record.images:
            continue
        # frontal first: generators read the first image as the frontal view
        images = sorted(record.images, key=lambda im: im.view not in FRONTAL_VIEWS)
        jobs.append(StudyJob(record.id, [im.path for im in images], [im.view for im in images], record.indication))
    return jobs


def collect_jobs(inputs: Iterable[str], split: str | None = None) -> list[StudyJob]:
    """Turn folders, globs, manifests (.jsonl) and image files into studies (one image each, or a manifest's)."""
    jobs: list[StudyJob] = []
    for item in inputs:
        path = Path(item)
        if path.suffix == ".jsonl" and path.is_file():
            jobs.extend(jobs_from_manifest(path, split))
            continue
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p))
            root = path
        elif any(ch in item for ch in "*?["):
            files = sorted(Path(p) for p in globlib.glob(item, recursive=True) if _is_image(Path(p)))
            root = None
        elif path.is_file():
            files, root = [path], None
        else:
            raise InputError(f"{item}: no such file, folder or manifest")
        if not files:
            raise InputError(f"{item}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
        for f in files:
            study_id = str(f.relative_to(root).with_suffix("")) if root is not None else f.stem
            jobs.append(StudyJob(study_id, [str(f)], ["unknown"]))
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise InputError(f"study ids are not unique (e.g. {dupes}); give folders instead of globs, or a manifest")
    return sorted(jobs, key=lambda j: j.id)


def shard(jobs: list[StudyJob], rank: int, world_size: int) -> list[StudyJob]:
    return jobs[rank::world_size]


def ids_in(path: Path) -> set[str]:
    """Ids of the complete lines of an output file (read only)."""
    return {json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def done_ids(path: Path) -> set[str]:
    """Ids already in an output file; a partial last line from a kill is cut off first."""
    if not path.is_file():
        return set()
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(cut)
    return ids_in(path)


class _Loader:
    """Decodes the images of each job in DataLoader workers so decoding overlaps generation."""

    def __init__(self, jobs: list[StudyJob]):
        self.jobs = jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int):
        from crrg.image import load_image

        job = self.jobs[index]
        try:
            return job, [load_image(p) for p in job.paths], None
        except CrrgError as exc:
            return job, None, str(exc)


def iterate_decoded(jobs: list[StudyJob], workers: int) -> Iterator[tuple[StudyJob, list | None, str | None]]:
    if workers <= 0:
        loader = _Loader(jobs)
        for i in range(len(loader)):
            yield loader[i]
        return
    from torch.utils.data import DataLoader

    yield from DataLoader(_Loader(jobs), batch_size=None, shuffle=False, num_workers=workers,
                          collate_fn=lambda x: x, prefetch_factor=2, persistent_workers=False)


def run_batch(generator, jobs: list[StudyJob], out_path: Path, resume: bool = False, workers: int = 1,
              options: dict | None = None, progress=None, already_done: set[str] | None = None) -> BatchSummary:
    """Generate a report per job into ``out_path`` (JSONL). Bad images are recorded as failures, not fatal.

    ``already_done`` adds ids finished elsewhere (a merged output of an earlier distributed run)."""
    options = options or {}
    summary = BatchSummary(total=len(jobs))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.exists() and not resume:
        raise InputError(f"{out_path} exists; pass --resume to continue it or choose another --out")
    finished = (done_ids(out_path) if resume else set()) | (already_done or set())
    todo = [j for j in jobs if j.id not in finished]
    summary.skipped = len(jobs) - len(todo)
    start = time.perf_counter()
    stream = iterate_decoded(todo, workers)
    if progress is not None:
        stream = progress(stream, total=len(todo), description="reports")
    with open(out_path, "a", encoding="utf-8") as handle:
        for job, images, error in stream:
            if error is None:
                study = StudyInput(images=images, views=job.views, indication=job.indication, id=job.id)
                report = generator.generate_report(study, **options)
                line = {"id": job.id, "images": job.paths, **report.to_dict()}
                summary.written += 1
            else:
                line = {"id": job.id, "images": job.paths, "error": error}
                summary.failed += 1
                summary.failures.append({"id": job.id, "error": error})
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            handle.flush()
    summary.seconds = time.perf_counter() - start
    return summary


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> "DistributedContext":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def init(self) -> None:
        import torch.distributed as dist

        if self.active and not dist.is_initialized():
            dist.init_process_group("gloo")

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.active:
            dist.barrier()

    def close(self) -> None:
        import torch.distributed as dist

        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def part_path(out_path: Path, rank: int) -> Path:
    return out_path.with_name(f"{out_path.stem}.rank{rank}{out_path.suffix}")


def merge_parts(out_path: Path, world_size: int, order: list[str]) -> int:
    """Merge the ranks' part files into ``out_path`` (ordered by id), atomically; parts are removed."""
    lines: dict[str, str] = {}
    if out_path.exists():  # a resumed merged output keeps its lines
        for line in out_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                lines[json.loads(line)["id"]] = line
    parts = [part_path(out_path, r) for r in range(world_size)]
    for part in parts:
        if part.exists():
            for line in part.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    lines[json.loads(line)["id"]] = line
    rank_of = {sid: i for i, sid in enumerate(order)}
    with atomic_open(out_path, "w") as handle:
        for sid in sorted(lines, key=lambda s: rank_of.get(s, len(rank_of))):
            handle.write(lines[sid] + "\n")
    for part in parts:
        part.unlink(missing_ok=True)
    return len(lines)
