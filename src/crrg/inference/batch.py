"""Batch report generation over a folder, a glob or a manifest; resumable; sharded under torchrun.

Output is JSONL written as it goes, one line per study, flushed after every line. A kill can leave
at most one partial last line, which :func:`read_output` drops (by truncating it away) before a
``--resume`` run skips every id already written. What a batch promises:

* one bad study (an undecodable image, an image the model cannot read, a lateral film alone) is a
  line with an ``error``, never the end of the batch; ``--resume`` retries those studies (their error
  lines are dropped first) and skips the rest;
* one writer per output: a lock (``.OUT.lock`` beside it, released by the kernel even on kill -9)
  refuses a second concurrent run on the same output instead of writing every id twice;
* SIGTERM or Ctrl-C stops after the study in hand, shuts the decoding workers down, and returns the
  summary so far (the CLI prints it and exits 143 / 130); image-decoding workers die with their parent
  even on kill -9 (``PR_SET_PDEATHSIG``), so none is left holding memory;
* an output that cannot be written (read-only folder, full disk) or a torn line in the middle of an
  output being resumed is one clear :class:`~crrg.errors.InputError`, not a traceback.

Under ``torchrun --nproc_per_node N -m crrg report ...`` each rank takes every N-th study (ordered
by id, so the split is the same on every node), writes ``OUT.rank{r}.jsonl``, and rank 0 merges the
parts into OUT after a barrier (gloo process group: works on CPU-only nodes too).
"""

from __future__ import annotations

import contextlib
import glob as globlib
import json
import logging
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from crrg.errors import CrrgError, InputError
from crrg.io import atomic_open
from crrg.observations import frontal_index, normalise_view
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
    interrupted: str | None = None  # the signal that stopped the batch (SIGTERM, SIGINT)

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "skipped_already_done": self.skipped, "written": self.written,
                "failed": self.failed, "seconds": round(self.seconds, 2),
                "studies_per_second": round(self.written / self.seconds, 3) if self.seconds else None,
                "interrupted": self.interrupted}


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def view_from_name(path: str | Path) -> str:
    """The view a file name states (``..._lateral.png``, ``PA.dcm``, ``study1-lat.jpg``), else unknown:
    a folder batch must not read a lateral film as a frontal study."""
    for token in reversed(re.split(r"[^a-z0-9]+", Path(path).stem.lower())):
        view = normalise_view(token)
        if view != "unknown":
            return view
    return "unknown"


def jobs_from_manifest(path: Path, split: str | None = None) -> list[StudyJob]:
    from crrg.records import read_manifest

    jobs = []
    for record in read_manifest(path, split=split):
        if not record.images:
            continue
        # the frontal image first (crrg.observations.frontal_index, the one rule), then the others in order
        first = frontal_index([im.view for im in record.images], fallback=0)
        images = [record.images[first]] + [im for i, im in enumerate(record.images) if i != first]
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
            jobs.append(StudyJob(study_id, [str(f)], [view_from_name(f)]))
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise InputError(f"study ids are not unique (e.g. {dupes}); give folders instead of globs, or a manifest")
    return sorted(jobs, key=lambda j: j.id)


def shard(jobs: list[StudyJob], rank: int, world_size: int) -> list[StudyJob]:
    return jobs[rank::world_size]


def _lines(path: Path, data: bytes) -> list[tuple[str, dict]]:
    """(raw line, parsed) of every complete line; a torn line in the middle is a clear error."""
    out = []
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            if not isinstance(row, dict) or "id" not in row:
                raise ValueError("no id")
        except ValueError:
            raise InputError(f"{path} line {number} is not a complete study line (a torn write?); delete that line "
                             "and run again with --resume") from None
        out.append((raw, row))
    return out


def read_output(path: Path, drop_failed: bool = False) -> set[str]:
    """Ids of the studies written successfully to an output being resumed. A partial last line (a
    kill) is cut off first; with ``drop_failed`` the error lines are removed too (atomically), so
    their studies are retried and no id ends up in the file twice."""
    if not path.is_file():
        return set()
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(cut)
        data = data[:cut]
    rows = _lines(path, data)
    done = {row["id"] for _, row in rows if "error" not in row}
    if drop_failed and len(done) != len(rows):
        with atomic_open(path, "w") as handle:
            for raw, row in rows:
                if "error" not in row:
                    handle.write(raw + "\n")
    return done


def done_ids(path: Path) -> set[str]:
    """Ids already written successfully (failed studies are not done: ``--resume`` retries them)."""
    return read_output(path)


def ids_in(path: Path) -> set[str]:
    """Ids of the successful complete lines of an output file (read only)."""
    return {row["id"] for _, row in _lines(path, path.read_bytes()) if "error" not in row}


def _die_with_parent(_worker_id: int = 0) -> None:
    """DataLoader worker init: the kernel kills this worker when the batch process dies (kill -9
    included); without it a worker blocked on a full queue outlives its parent, holding its memory."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the DataLoader's own parent watchdog remains
        return
    if os.getppid() == 1:  # the parent died before the call above
        os._exit(1)


class _Loader:
    """Decodes the images of each job in DataLoader workers so decoding overlaps generation."""

    def __init__(self, jobs: list[StudyJob], gate: bool = True):
        self.jobs = jobs
        self.gate = gate

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int):
        from crrg.image import load_radiograph

        job = self.jobs[index]
        try:
            images, views = [], []
            for path, view in zip(job.paths, job.views):
                pixels, info = load_radiograph(path, gate=self.gate)  # the chest-radiograph gate, as crrg report and the service
                images.append(pixels)
                views.append(view if view != "unknown" else info.view)  # the DICOM header's ViewPosition
            return StudyJob(job.id, job.paths, views, job.indication), images, None
        except CrrgError as exc:
            return job, None, str(exc)
        except Exception as exc:  # a decoder bug must cost one study, not the batch
            return job, None, f"could not decode the images ({type(exc).__name__}: {exc})"


def iterate_decoded(jobs: list[StudyJob], workers: int, gate: bool = True) -> Iterator[tuple[StudyJob, list | None, str | None]]:
    if workers <= 0:
        loader = _Loader(jobs, gate)
        for i in range(len(loader)):
            yield loader[i]
        return
    from torch.utils.data import DataLoader

    yield from DataLoader(_Loader(jobs, gate), batch_size=None, shuffle=False, num_workers=workers,
                          collate_fn=lambda x: x, prefetch_factor=2, persistent_workers=False,
                          worker_init_fn=_die_with_parent)


class BatchInterrupted(BaseException):
    """SIGTERM or SIGINT arrived during a batch (a BaseException, like KeyboardInterrupt, so that the
    per-study ``except Exception`` does not swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals():
    """SIGTERM / SIGINT raise :class:`BatchInterrupted` in the main thread while a batch runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise BatchInterrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def output_lock(out_path: Path):
    """One writer per output file: a second run on the same output is refused, not interleaved."""
    import fcntl

    lock_path = out_path.parent / f".{out_path.name}.lock"
    try:
        handle = open(lock_path, "a")
    except OSError as exc:
        raise InputError(f"cannot write beside {out_path} ({exc.strerror}); choose another --out") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise InputError(f"another crrg report run is writing {out_path} (lock {lock_path}); wait for it to end "
                         "or choose another --out") from None
    try:
        yield
    finally:
        handle.close()


def _study(job: StudyJob, images: list) -> StudyInput:
    return StudyInput(images=images, views=job.views, indication=job.indication, id=job.id)


def _line(job: StudyJob, report) -> dict:
    """The output line of a written report."""
    return {"id": job.id, "images": job.paths, "views": job.views, **report.to_dict()}


def _report_lines(generator, pending: list[tuple[StudyJob, list]], options: dict) -> list[tuple[dict, str | None]]:
    """The output lines of several decoded studies: one batched call when the generator has
    ``generate_many``; if that call fails, each study alone, so one bad study costs only itself."""
    if len(pending) > 1 and hasattr(generator, "generate_many"):
        try:
            reports = generator.generate_many([_study(job, images) for job, images in pending], options)
            return [(_line(job, report), None) for (job, _), report in zip(pending, reports)]
        except Exception:  # noqa: BLE001 - retried one by one below, where the error is recorded per study
            log.info("batched generation failed; generating the %d studies one by one", len(pending))
    return [_report_line(generator, job, images, options) for job, images in pending]


def _report_line(generator, job: StudyJob, images: list, options: dict) -> tuple[dict, str | None]:
    """The output line of one decoded study, and its error (None when it was written)."""
    study = _study(job, images)
    try:
        if hasattr(generator, "generate"):
            report = generator.generate(study, options)
        else:
            report = generator.generate_report(study, **options)
        return _line(job, report), None
    except CrrgError as exc:
        error = str(exc)
    except Exception as exc:  # a model bug on one odd image must cost one study, not the batch
        log.warning("study %s failed", job.id, exc_info=True)
        error = f"the generator failed on this study ({type(exc).__name__}: {exc})"
    return {"id": job.id, "images": job.paths, "error": error}, error


def run_batch(generator, jobs: list[StudyJob], out_path: Path, resume: bool = False, workers: int = 1,
              options: dict | None = None, progress=None, already_done: set[str] | None = None,
              gate: bool = True, batch_size: int = 1) -> BatchSummary:
    """Generate a report per job into ``out_path`` (JSONL); see the module docstring for what it promises.

    ``already_done`` adds ids finished elsewhere (a merged output of an earlier distributed run);
    ``gate=False`` skips the chest-radiograph gate's statistics (research on unusual films);
    ``batch_size`` studies are decoded together (:meth:`crrg.generation.ReportEngine.generate_many`:
    one batched search, the same reports), written when the batch is done."""
    if batch_size < 1:
        raise InputError(f"the batch size must be at least 1, got {batch_size}")
    options = options or {}
    summary = BatchSummary(total=len(jobs))
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder of {out_path} ({exc.strerror}); choose another --out") from None
    with output_lock(out_path):
        if out_path.exists() and not resume:
            raise InputError(f"{out_path} exists; pass --resume to continue it or choose another --out")
        finished = (read_output(out_path, drop_failed=True) if resume else set()) | (already_done or set())
        todo = [j for j in jobs if j.id not in finished]
        summary.skipped = len(jobs) - len(todo)
        start = time.perf_counter()
        try:
            handle = open(out_path, "a", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write {out_path} ({exc.strerror}); choose another --out") from None
        stream = iterate_decoded(todo, workers, gate)
        try:
            with handle, _stop_on_signals():
                shown = progress(stream, total=len(todo), description="reports") if progress is not None else stream
                pending: list[tuple[StudyJob, list]] = []

                def write(line: dict, error: str | None) -> None:
                    if error is None:
                        summary.written += 1
                    else:
                        summary.failed += 1
                        summary.failures.append({"id": line["id"], "error": error})
                    handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                    handle.flush()

                for job, images, error in shown:
                    if error is not None:
                        write({"id": job.id, "images": job.paths, "error": error}, error)
                        continue
                    pending.append((job, images))
                    if len(pending) >= batch_size:
                        for line, line_error in _report_lines(generator, pending, options):
                            write(line, line_error)
                        pending.clear()
                for line, line_error in _report_lines(generator, pending, options):
                    write(line, line_error)
        except BatchInterrupted as stop:
            summary.interrupted = str(stop)
            log.warning("batch stopped by %s after %d studies; --resume continues it", stop, summary.written + summary.failed)
        except OSError as exc:  # ENOSPC, EIO, a folder made read-only under us
            raise InputError(f"writing {out_path} failed ({exc.strerror or exc}); free space or fix the folder, "
                             "then run again with --resume") from None
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # stops the DataLoader and joins its workers now, not at garbage collection
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
    parts = [part_path(out_path, r) for r in range(world_size)]
    for source in [out_path, *parts]:  # a resumed merged output keeps its lines; a part's newer line wins
        if source.exists():
            for raw, row in _lines(source, source.read_bytes()):
                lines[row["id"]] = raw
    rank_of = {sid: i for i, sid in enumerate(order)}
    with atomic_open(out_path, "w") as handle:
        for sid in sorted(lines, key=lambda s: rank_of.get(s, len(rank_of))):
            handle.write(lines[sid] + "\n")
    for part in parts:
        part.unlink(missing_ok=True)
    return len(lines)
