"""``crrg report IMAGE... --model M``: the report of one study (frontal and optional lateral image).

Generic over generators: any saved model whose class implements ``generate_report`` (``rrg``,
``blip``) works. The per-study work lives in :func:`load_study` and :func:`report_study`, apart from
argument parsing, so batch modes (folders, manifests, sharding) can call them per study.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any, Optional

import typer

from crrg.errors import InputError
from crrg.models.registry import DEFAULT_MODEL

FORMATS = ("text", "json")


def load_study(paths: list[Path], views: list[str] | None = None, indication: str = "", study_id: str = "",
               gate: bool = True):
    """Decode the images of one study. Views: ``views`` if given, else the DICOM header, else the
    order given (first frontal PA, second LATERAL). ``gate=False`` skips the chest-radiograph gate's
    statistics (a CT or MR DICOM is still refused)."""
    from crrg.image import load_radiograph
    from crrg.observations import VIEWS, normalise_view
    from crrg.reporting import StudyInput

    if not paths:
        raise InputError("give at least one image (the frontal view, optionally followed by the lateral)")
    if len(paths) > 2:
        raise InputError(f"one study has at most two images (frontal and lateral); got {len(paths)}")
    if views and len(views) != len(paths):
        raise InputError(f"--view was given {len(views)} time(s) for {len(paths)} image(s); give one per image")
    images, found = [], []
    for path in paths:
        pixels, info = load_radiograph(path, gate=gate)  # regular files only; the chest-radiograph gate (crrg.image.gate)
        images.append(pixels)
        found.append(info.view)
    if views:
        chosen = [normalise_view(v) if v not in VIEWS else v for v in views]
        bad = [v for v, c in zip(views, chosen) if c == "unknown" and v != "unknown"]
        if bad:
            raise InputError(f"--view {bad[0]!r} is not a view; use PA, AP, LATERAL or LL")
    else:
        chosen = [v if v != "unknown" else ("PA" if i == 0 else "LATERAL") for i, v in enumerate(found)]
    return StudyInput(images=images, views=chosen, indication=indication, id=study_id)


def load_generator(model: str = DEFAULT_MODEL, device: str = "auto"):
    """A saved model (bundled name, folder or hub id) ready to write reports on ``device``: a
    :class:`crrg.generation.ReportEngine` (:func:`crrg.generation.load_generator`)."""
    from crrg.generation import load_generator as load

    return load(model, device=device)


def report_study(generator, study, **options: Any):
    """One study -> :class:`crrg.reporting.GeneratedReport` (an option left None means the model's default)."""
    options = {k: v for k, v in options.items() if v is not None}
    if hasattr(generator, "generate"):
        return generator.generate(study, options)
    return generator.generate_report(study, **options)


def decoding_overrides(beams, sample, top_p, temperature, consensus, joint, impression, anatomical_order,
                       filter_candidates, max_new_tokens) -> dict[str, Any]:
    """The decoding flags the user gave, as :class:`crrg.generation.DecodingOptions` overrides, checked now
    (a typo fails before any model is loaded)."""
    from crrg.generation import DecodingOptions

    if (top_p is not None or temperature is not None) and not sample:
        raise InputError("--top-p and --temperature only apply with --sample")
    given = {"beams": beams, "sample": True if sample else None, "top_p": top_p, "temperature": temperature,
             "consensus": consensus, "joint": joint, "impression": impression,
             "learned_order": False if anatomical_order else None, "filter_candidates": filter_candidates,
             "max_new_tokens": max_new_tokens}
    given = {k: v for k, v in given.items() if v is not None}
    DecodingOptions().replace(given)
    return given


def format_text(report) -> str:
    lines = [f"WARNING: {w}" for w in getattr(report, "warnings", [])]  # an unreliable report (crrg.ood)
    lines += [f"FINDINGS: {report.findings}", f"IMPRESSION: {report.impression}"]
    if report.sentences:
        lines.append("")
        lines.append("Sentences:")
        for s in report.sentences:
            where = f"{s.region} " if s.region else ""
            box = f"[{', '.join(f'{v:.0f}' for v in s.box)}] " if s.box else ""
            lines.append(f"  {where}{box}(image {s.image}): {s.text}")
    abnormal = [r for r in report.regions if r.abnormal_probability >= 0.5]
    if abnormal:
        lines.append("")
        lines.append("Abnormal regions: " + ", ".join(f"{r.name} {r.abnormal_probability:.2f}" for r in abnormal))
    if report.probabilities:
        lines.append("")
        lines.append("Finding probabilities:")
        for name, p in sorted(report.probabilities.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {name:28s} {p:.3f}")
    return "\n".join(lines)


def is_batch_input(items: list[str]) -> bool:
    """Folders, globs and manifests mean many studies; one or two image files are one study."""
    return any(Path(i).is_dir() or i.endswith(".jsonl") or any(ch in i for ch in "*?[") for i in items)


def run_batch_command(items: list[str], model: str, out: Path, resume: bool, workers: int,
                      split: Optional[str], options: dict[str, Any], device: str = "auto", gate: bool = True,
                      batch_size: int = 1) -> int:
    """Batch mode, sharded across ranks when started by torchrun (RANK / WORLD_SIZE set)."""
    from crrg.cli.common import info, progress
    from crrg.inference.batch import DistributedContext, collect_jobs, ids_in, merge_parts, part_path, run_batch, shard

    dist = DistributedContext.from_env()
    jobs = collect_jobs(items, split=split)
    if not jobs:
        raise InputError("no studies to report on")
    dist.init()
    try:
        generator = load_generator(model, device=device)
        if dist.active:
            if out.exists() and not resume:
                raise InputError(f"{out} exists; pass --resume to continue it or choose another --out")
            # the merged output is written atomically by rank 0, so every rank can read it as is
            merged = ids_in(out) if out.exists() else set()
            summary = run_batch(generator, shard(jobs, dist.rank, dist.world_size), part_path(out, dist.rank),
                                resume=resume, workers=workers, options=options,
                                progress=progress if dist.rank == 0 else None, already_done=merged, gate=gate,
                                batch_size=batch_size)
            dist.barrier()
            if dist.rank == 0:
                total = merge_parts(out, dist.world_size, [j.id for j in jobs])
                info(f"merged {dist.world_size} shards into {out}: {total} studies")
            dist.barrier()
        else:
            summary = run_batch(generator, jobs, out, resume=resume, workers=workers, options=options, progress=progress,
                                gate=gate, batch_size=batch_size)
    finally:
        dist.close()
    report = summary.as_dict()
    prefix = f"rank {dist.rank}: " if dist.active else ""
    info(f"{prefix}{report['written']} written, {report['skipped_already_done']} already done, "
         f"{report['failed']} failed, {report['seconds']} s ({report['studies_per_second']} studies/s)")
    for failure in summary.failures[:5]:
        info(f"  failed {failure['id']}: {failure['error']}")
    if summary.interrupted:
        info(f"{prefix}stopped by {summary.interrupted}; run again with --resume to continue")
        return 128 + int(getattr(signal.Signals, summary.interrupted, signal.SIGTERM))
    if summary.failed:
        info(f"{prefix}{summary.failed} stud{'y' if summary.failed == 1 else 'ies'} failed; fix them and run again "
             "with --resume (failed studies are retried)")
    return 1 if summary.failed else 0


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        images: list[str] = typer.Argument(..., help="One study's images (frontal, then optionally lateral; PNG/JPEG/DICOM), "
                                                     "or for batch mode folders, globs and manifests (.jsonl)."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Bundled model name, saved model folder or hub id."),
        fmt: str = typer.Option("text", "--format", "-f", help="text or json (one study)."),
        indication: str = typer.Option("", "--indication", help="Clinical indication, for models that use it."),
        view: Optional[list[str]] = typer.Option(None, "--view", help="View of each image (PA, AP, LATERAL, LL), in order."),
        beams: Optional[int] = typer.Option(None, "--beams", min=1, help="Beam-search width (default: the model's)."),
        sample: bool = typer.Option(False, "--sample", help="Nucleus sampling instead of beam search."),
        top_p: Optional[float] = typer.Option(None, "--top-p", min=0.0, max=1.0, help="Sampling: nucleus mass."),
        temperature: Optional[float] = typer.Option(None, "--temperature", min=0.01, help="Sampling temperature."),
        consensus: Optional[int] = typer.Option(None, "--consensus", min=0,
                                                help="Region-guided models: write each sentence as the consensus of this many "
                                                     "beam (or sampled) candidates; 0 = off (default: the model's setting)."),
        joint: Optional[str] = typer.Option(None, "--joint", help="Region-guided models: how the finding classifier and the "
                                                                  "writer work together: off, condition, rerank or filter "
                                                                  "(default: the model's setting)."),
        impression: Optional[str] = typer.Option(None, "--impression", help="Region-guided models: IMPRESSION candidate kept: "
                                                                            "top (best beam) or agreement (the one that "
                                                                            "restates the FINDINGS)."),
        filter_candidates: Optional[bool] = typer.Option(None, "--filter-candidates/--no-filter-candidates",
                                                         help="Joint filter: vet each region's candidates before their "
                                                              "consensus (default: the model's setting)."),
        anatomical_order: bool = typer.Option(False, "--anatomical-order",
                                              help="Region-guided models: FINDINGS in anatomical order, not the sentence "
                                                   "order the model learned from its training reports."),
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="Longest sentence or report in tokens."),
        device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto (a GPU when there is one; "
                                                            "under torchrun each rank its LOCAL_RANK's GPU)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file (atomic for one study; JSONL written as it goes in batch mode)."),
        resume: bool = typer.Option(False, "--resume", help="Batch mode: skip studies already in --out."),
        workers: int = typer.Option(1, "--workers", min=0, help="Batch mode: image-decoding worker processes."),
        split: Optional[str] = typer.Option(None, "--split", help="Batch mode with a manifest: only this split."),
        batch_size: int = typer.Option(1, "--batch-size", min=1, help="Batch mode: studies decoded together in one "
                                                                     "batched search (the same reports; pays on a GPU)."),
        gate: bool = typer.Option(True, "--gate/--no-gate", help="Refuse inputs that do not look like a chest radiograph "
                                                                 "(default). --no-gate is for research on unusual films; "
                                                                 "the report still carries its OOD warning."),
        rexrank_images: Optional[Path] = typer.Option(None, "--rexrank-images", help="The input is a ReXrank JSON and "
                                                      "this its image root: write ReXrank's submission JSON to --out."),
    ) -> None:
        """Write radiology reports: one study, or (folders, globs, manifests) a resumable batch.

        Under ``torchrun --nproc_per_node N -m crrg report ...`` the batch is sharded across ranks and
        nodes, and rank 0 merges the outputs.
        """
        from crrg.cli.common import info
        from crrg.io import atomic_write_text

        if fmt not in FORMATS:
            raise InputError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
        options = decoding_overrides(beams, sample, top_p, temperature, consensus, joint, impression,
                                     anatomical_order, filter_candidates, max_new_tokens)
        if rexrank_images is not None:
            from crrg.data.rexrank import report_rexrank

            if len(images) != 1 or out is None:
                raise InputError("--rexrank-images takes one ReXrank input JSON and --out for the submission JSON")
            run = lambda items, jsonl: run_batch_command(items, model, jsonl, False, workers, None, options, device, gate)  # noqa: E731
            code = report_rexrank(Path(images[0]), rexrank_images, out, run)
            if code:
                raise typer.Exit(code)
            return
        if is_batch_input(images) or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if out is None:
                raise InputError("batch mode (folders, globs, manifests or torchrun) needs --out FILE.jsonl")
            if view or indication:
                raise InputError("--view and --indication apply to one study; a manifest carries them in batch mode")
            code = run_batch_command(images, model, out, resume, workers, split, options, device, gate, batch_size)
            if code:
                raise typer.Exit(code)
            return
        study = load_study([Path(i) for i in images], view, indication, study_id=Path(images[0]).stem, gate=gate)
        info(f"loading model {model}")
        generator = load_generator(model, device=device)
        result = report_study(generator, study, **options)
        if fmt == "json":
            payload = result.to_dict()
            payload["images"] = [str(p) for p in images]
            payload["views"] = study.views
            text = json.dumps(payload, indent=2, ensure_ascii=False)
        else:
            text = format_text(result)
        if out is not None:
            try:
                atomic_write_text(out, text + "\n")
            except OSError as exc:  # read-only folder, full disk
                raise InputError(f"cannot write {out} ({exc.strerror or exc}); choose another --out") from None
            info(f"wrote {out}")
        else:
            typer.echo(text)
