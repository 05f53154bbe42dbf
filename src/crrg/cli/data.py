"""``crrg data``: build manifests from datasets (``prepare``) and summarise them (``stats``)."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer

from crrg.cli.common import CliState, info, progress

data_app = typer.Typer(help="Dataset readers -> manifest, and manifest statistics.", no_args_is_help=True)
prepare_app = typer.Typer(help="Read a dataset and write a crrg manifest (JSONL of study records).", no_args_is_help=True)
data_app.add_typer(prepare_app, name="prepare")

OUT = typer.Option(..., "--out", "-o", help="Manifest to write (JSONL; written atomically).")
VIEWS = typer.Option(None, "--views", help="Keep only images of these views, e.g. 'PA,AP' or 'frontal'; studies left without images are dropped.")
WITH_REPORT = typer.Option(False, "--require-report", help="Drop studies with neither findings nor impression.")
WITH_IMAGES = typer.Option(False, "--require-images", help="Drop studies without images.")
ASSIGN = typer.Option(None, "--assign-splits", help="Give 'unassigned' studies a train/val/test split by patient, e.g. 0.8,0.1,0.1 (seeded hash; studies with a split keep it).")
SEED = typer.Option(0, "--seed", help="Seed of --assign-splits.")


def _quiet(ctx: typer.Context) -> bool:
    """--quiet from the root context; click's global context stack does not see typer's vendored click."""
    obj = ctx.find_root().obj
    return obj.quiet if isinstance(obj, CliState) else False


@dataclass
class _Options:
    views: Optional[tuple[str, ...]]
    with_report: bool
    with_images: bool
    ratios: Optional[tuple[float, float, float]]
    seed: int
    quiet: bool = False


def _check_options(ctx: typer.Context, out: Path, views: Optional[str], with_report: bool, with_images: bool,
                   assign: Optional[str], seed: int) -> _Options:
    """Validate the cheap options before a reader spends time on the dataset."""
    from crrg.data.filters import parse_views
    from crrg.data.splits import parse_ratios
    from crrg.errors import InputError

    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as {out / 'manifest.jsonl'}")
    return _Options(parse_views(views), with_report, with_images, parse_ratios(assign) if assign else None, seed,
                    quiet=_quiet(ctx))


def _write(reader, out: Path, description: str, options: _Options) -> None:
    from crrg.data.filters import apply_filters
    from crrg.data.splits import assign_splits
    from crrg.records import write_manifest

    stream = reader if options.quiet else progress(reader, total=len(reader), description=description)
    records = apply_filters(stream, options.views, options.with_report, options.with_images)
    if options.ratios is not None:
        records = assign_splits(records, options.ratios, options.seed)
    written_splits: Counter[str] = Counter()

    def counted(stream):
        for record in stream:
            written_splits[record.split] += 1
            yield record

    written = write_manifest(out, counted(records))
    notes = getattr(reader, "notes", {}) or {}
    splits = ", ".join(f"{written_splits[s]} {s}" for s in ("train", "val", "test", "unassigned") if written_splits[s])
    extra = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in notes.items()
                      if k not in ("studies", "images", "train", "val", "test", "unassigned") and v)
    read = f"read {notes['studies']} studies; " if "studies" in notes else ""
    if not options.quiet:
        info(f"wrote {written} studies to {out} ({splits or 'none'}); {read}{extra}".rstrip("; "))


@prepare_app.command("iu-xray")
def prepare_iu_xray(
    ctx: typer.Context,
    reports: Path = typer.Option(..., "--reports", help="NLMCXR_reports.tgz, its extracted ecgen-radiology/ folder, or Kaggle indiana_reports.csv."),
    out: Path = OUT,
    split: Optional[Path] = typer.Option(None, "--split", help="R2Gen-style annotation.json with train/val/test; other studies are 'unassigned'."),
    metadata: Optional[Path] = typer.Option(None, "--metadata", help="nlmcxr_dicom_metadata.csv(.gz): view positions."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image folder (Open-i flat, R2Gen images/<study>/<n>.png or Kaggle layout); only found images are kept."),
    projections: Optional[Path] = typer.Option(None, "--projections", help="Kaggle indiana_projections.csv (default: next to indiana_reports.csv)."),
    views: Optional[str] = VIEWS,
    require_report: bool = WITH_REPORT,
    require_images: bool = WITH_IMAGES,
    assign_splits: Optional[str] = ASSIGN,
    seed: int = SEED,
) -> None:
    """IU X-Ray (Open-i) reports, with optional split file, DICOM metadata and images."""
    from crrg.data.iu_xray import IuXrayReader

    options = _check_options(ctx, out, views, require_report, require_images, assign_splits, seed)
    reader = IuXrayReader(reports, split_file=split, metadata=metadata, images=images, projections=projections,
                          manifest_dir=out.resolve().parent)
    _write(reader, out, "IU X-Ray", options)


@prepare_app.command("mimic-cxr")
def prepare_mimic_cxr(
    ctx: typer.Context,
    root: Path = typer.Option(..., "--root", help="MIMIC-CXR-JPG folder with mimic-cxr-2.0.0-{split,metadata,chexpert}.csv.gz and files/."),
    out: Path = OUT,
    reports: Optional[Path] = typer.Option(None, "--reports", help="Folder holding the MIMIC-CXR report files/pNN/p<subject>/s<study>.txt, or mimic-cxr-reports.zip (default: --root)."),
    imagenome: Optional[Path] = typer.Option(None, "--imagenome", help="Chest ImaGenome folder (silver_dataset/scene_graph/ or scene_graph.zip, gold_dataset/): adds the 29 regions' boxes, sentences and abnormal flags to each study."),
    silver_only: bool = typer.Option(False, "--imagenome-silver-only", help="Ignore Chest ImaGenome's gold annotations (by default they replace silver for their 1,000 images)."),
    clip_boxes: bool = typer.Option(False, "--clip-boxes", help="Clip region boxes to each JPG's size (opens every frontal JPG's header)."),
    views: Optional[str] = VIEWS,
    require_report: bool = WITH_REPORT,
    require_images: bool = WITH_IMAGES,
    assign_splits: Optional[str] = ASSIGN,
    seed: int = SEED,
) -> None:
    """MIMIC-CXR-JPG tables and MIMIC-CXR report texts, one record per study; with --imagenome, its regions."""
    from crrg.data.mimic_cxr import MimicCxrReader

    options = _check_options(ctx, out, views, require_report, require_images, assign_splits, seed)
    if not options.quiet:
        info("reading the MIMIC-CXR tables")
    reader = MimicCxrReader(root, reports=reports, manifest_dir=out.resolve().parent)
    if imagenome is not None:
        from crrg.data.imagenome import WithImaGenomeRegions

        reader = WithImaGenomeRegions(reader, imagenome, use_gold=not silver_only, clip_to_images=clip_boxes,
                                      manifest_dir=out.resolve().parent)
    _write(reader, out, "MIMIC-CXR", options)


@prepare_app.command("csv")
def prepare_csv(
    ctx: typer.Context,
    table: Path = typer.Argument(..., help="CSV, TSV or JSONL, one study per row."),
    out: Path = OUT,
    image_col: Optional[List[str]] = typer.Option(None, "--image-col", help="Image path column (repeatable; default: image / image_path / images / path)."),
    report_col: Optional[str] = typer.Option(None, "--report-col", help="Free-text report column (default: report / text)."),
    images_root: Optional[Path] = typer.Option(None, "--images-root", help="Folder relative image paths are relative to (default: the table's folder)."),
    views: Optional[str] = VIEWS,
    require_report: bool = WITH_REPORT,
    require_images: bool = WITH_IMAGES,
    assign_splits: Optional[str] = ASSIGN,
    seed: int = SEED,
) -> None:
    """Your own table: image path(s), report text or findings/impression, optional CheXpert-14 labels, split, view."""
    from crrg.data.generic import GenericReader

    options = _check_options(ctx, out, views, require_report, require_images, assign_splits, seed)
    reader = GenericReader(table, image_columns=image_col, report_column=report_col, images_root=images_root,
                           manifest_dir=out.resolve().parent)
    _write(reader, out, Path(table).name, options)


@data_app.command("enrich-regions")
def enrich_regions(
    ctx: typer.Context,
    manifest: Path = typer.Argument(..., help="Manifest (JSONL) of studies with reports and frontal images but no region boxes (IU X-Ray, MIMIC-CXR)."),
    out: Path = OUT,
    model: str = typer.Option("crrg-default", "--model", help="Saved rrg model whose region detector gives the pseudo boxes (bundled name, folder or hub id)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace regions a study already has (default: keep them, e.g. Chest ImaGenome's)."),
    device: str = typer.Option("auto", "--device", help="Where the detector runs: cpu, cuda, cuda:N or auto (a GPU when there is one)."),
) -> None:
    """Region supervision without boxes: each report sentence assigned to its anatomical regions, boxes from a detector."""
    from crrg.data.region_assignment import PseudoBoxes, enrich_records
    from crrg.errors import InputError
    from crrg.records import iter_manifest, write_manifest

    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as {out / 'manifest.jsonl'}")
    if out.resolve() == manifest.resolve():
        raise InputError(f"--out {out} is the input manifest; write the enriched manifest to a new file")
    boxes = PseudoBoxes(model, device=device)
    out_dir = out.resolve().parent
    notes: dict[str, int] = {}
    records = iter_manifest(manifest)  # streamed: one study at a time
    if not _quiet(ctx):
        with open(manifest, encoding="utf-8") as handle:
            total = sum(1 for _ in handle) - 1
        records = progress(records, total=total, description="regions")

    def relative(stream):
        for record in stream:  # paths were resolved against the input manifest; store them relative to the output
            for image in record.images:
                image.path = os.path.relpath(image.path, out_dir)
            yield record

    written = write_manifest(out, relative(enrich_records(records, boxes, overwrite=overwrite, notes=notes)))
    if not _quiet(ctx):
        info(f"wrote {written} studies to {out}; " + ", ".join(f"{k}: {v}" for k, v in notes.items()))


def _fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


@data_app.command("stats")
def stats(
    ctx: typer.Context,
    manifest: Path = typer.Argument(..., help="Manifest (JSONL) to summarise."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON instead of tables."),
) -> None:
    """Studies per split, image views, label prevalence per observation, report length in words."""
    from rich.console import Console
    from rich.table import Table

    from crrg.data.stats import compute_stats
    from crrg.records import iter_manifest

    records = iter_manifest(manifest, resolve_paths=False)
    if not as_json and not _quiet(ctx):
        records = progress(records, description="reading")
    result = compute_stats(records)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    out = Console()
    overview = Table(title=f"{manifest}: {result.studies} studies, {result.patients} patients, {result.images} images")
    for column in ("split", "studies", "images", "words mean", "median", "p95"):
        overview.add_column(column, justify="left" if column == "split" else "right", no_wrap=True)
    for split in result.splits:
        words = result.report_words_per_split[split]
        overview.add_row(split, str(result.splits[split]), str(sum(result.views_per_split[split].values())),
                         _fmt(words.mean), _fmt(words.median), _fmt(words.p95))
    words = result.report_words
    overview.add_row("all", str(result.studies), str(result.images), _fmt(words.mean), _fmt(words.median),
                     _fmt(words.p95), style="bold")
    out.print(overview)
    out.print(f"studies without images: {result.studies_without_images}; "
              f"without findings/impression: {result.studies_without_report}")
    view_table = Table(title="images per view")
    view_table.add_column("view", no_wrap=True)
    for split in result.splits:
        view_table.add_column(split, justify="right", no_wrap=True)
    view_table.add_column("all", justify="right", no_wrap=True)
    for view, count in result.views.items():
        view_table.add_row(view, *[str(result.views_per_split[s].get(view, 0)) for s in result.splits], str(count))
    out.print(view_table)
    labels = Table(title="label prevalence (positive / all studies)")
    for column in ("observation", "pos", "neg", "uncertain", "blank", "prevalence"):
        labels.add_column(column, justify="left" if column == "observation" else "right", no_wrap=True)
    for name, counts in result.labels.items():
        prevalence = counts.prevalence
        labels.add_row(name, str(counts.positive), str(counts.negative), str(counts.uncertain), str(counts.missing),
                       "-" if prevalence is None else f"{100 * prevalence:.1f}%")
    out.print(labels)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
