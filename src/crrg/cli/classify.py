"""``crrg classify`` (probabilities and labels per image) and ``crrg evaluate-classifier`` (AUC, F1, ROC).

Both accept a saved CLIP model (zero-shot, prompts from the packaged or a user's prompt file) or a
saved supervised classifier; thresholds are the ones stored with the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from crrg.cli.common import CliState, info, is_quiet, progress

MODEL = typer.Option(..., "--model", "-m", help="Saved model folder, bundled model name or hub id (a 'clip' or 'classifier' model).")
def _quiet(ctx: typer.Context) -> bool:
    """--quiet from the root context (click's context stack is not reliable under recent typer)."""
    obj = ctx.find_root().obj
    return obj.quiet if isinstance(obj, CliState) else is_quiet()


def _status(ctx: typer.Context, message: str) -> None:
    if not _quiet(ctx):
        info(message)


DEVICE = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto (a GPU when there is one).")
PROMPTS = typer.Option(None, "--prompts", help="Zero-shot prompt file (JSON) for CLIP models; default: the packaged prompts.json.")


def classify(
    ctx: typer.Context,
    images: List[Path] = typer.Argument(..., help="Radiographs (PNG, JPEG or DICOM)."),
    model: str = MODEL,
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per image) instead of a table."),
    prompts: Optional[Path] = PROMPTS,
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    device: str = DEVICE,
) -> None:
    """Probabilities and thresholded labels for each image."""
    from crrg.clip.predict import check_images, load_classifier, predict_paths

    check_images(images)
    classifier = load_classifier(model, prompts, device=device)
    _status(ctx, f"{classifier.kind} classifier with {len(classifier.names)} labels")
    paths = [str(p) for p in images]
    probs = predict_paths(classifier, paths, batch_size=batch_size, progress=None if _quiet(ctx) else progress)
    labels = classifier.labels(probs)
    results = [
        {"image": path, "probabilities": {n: round(float(p), 4) for n, p in zip(classifier.names, row)},
         "labels": {n: int(v) for n, v in zip(classifier.names, lab)}}
        for path, row, lab in zip(paths, probs, labels)
    ]
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    from rich.table import Table

    table = Table("label", *[Path(p).name for p in paths], "threshold")
    for j, name in enumerate(classifier.names):
        cells = [f"[bold]{probs[i, j]:.3f}[/bold]" if labels[i, j] else f"{probs[i, j]:.3f}" for i in range(len(paths))]
        table.add_row(name, *cells, f"{classifier.thresholds[name]:.3f}")
    from rich.console import Console

    Console().print(table)


def evaluate_classifier(
    ctx: typer.Context,
    model: str = MODEL,
    data: Path = typer.Option(..., "--data", "-d", help="Manifest (JSONL with labels), or an image folder with class sub-folders (0_normal/ 1_abnormal/)."),
    split: Optional[str] = typer.Option("test", "--split", help="Manifest split to evaluate ('all' for every study); ignored for image folders."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for metrics.json, predictions.jsonl and roc.png."),
    prompts: Optional[Path] = PROMPTS,
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated labels to evaluate (default: all of the model's)."),
    unknown: str = typer.Option("ignore", "--unknown", help="Labels not mentioned in a study: 'ignore' (left out) or 'negative' "
                                "(right for synthetic data, where every finding not inserted is truly absent)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    device: str = DEVICE,
) -> None:
    """AUC per label, macro AUC, accuracy and F1 on labelled data; ROC curves as PNG."""
    from crrg.clip.data import labeled_from_records, read_image_folder
    from crrg.clip.evaluate import classification_report, targets_with_unknowns, write_outputs
    from crrg.clip.predict import load_classifier, predict_paths
    from crrg.errors import InputError
    from crrg.records import read_manifest

    if out is not None and out.is_file():
        raise InputError(f"--out {out} is a file; give a folder")
    if unknown not in ("ignore", "negative"):
        raise InputError(f"--unknown {unknown!r} is not 'ignore' or 'negative'")
    classifier = load_classifier(model, prompts, device=device)
    if data.is_dir():
        items, folder_labels = read_image_folder(data)
        names = _match_folder_labels(folder_labels, classifier.names)
    else:
        records = read_manifest(data, split=None if split in (None, "all") else split)
        if not records:
            raise InputError(f"{data} has no studies in split {split!r}")
        names = list(classifier.names)
        if labels:
            wanted = [n.strip() for n in labels.split(",") if n.strip()]
            missing = [n for n in wanted if n not in names]
            if missing:
                raise InputError(f"--labels {missing} are not labels of this model ({', '.join(names)})")
            names = wanted
        items = labeled_from_records(records, names, uncertain="ignore", unknown=unknown)
        if not items:
            raise InputError(f"no study of split {split!r} in {data} has an image")
    _status(ctx, f"evaluating a {classifier.kind} classifier on {len(items)} images")
    probs = predict_paths(classifier, [it.path for it in items], batch_size=batch_size, progress=None if _quiet(ctx) else progress)
    columns = [classifier.names.index(n) for n in names]
    y_true = targets_with_unknowns(items)
    y_score = probs[:, columns]
    thresholds = {n: classifier.thresholds[n] for n in names}
    report = classification_report(y_true, y_score, names, thresholds)
    _print_report(report)
    if out is not None:
        write_outputs(out, report, items, y_true, y_score, names)
        _status(ctx, f"wrote metrics.json, predictions.jsonl and roc.png to {out}")


def _match_folder_labels(folder_labels: list[str], model_labels: list[str]) -> list[str]:
    """The model's labels that the folder's classes correspond to (same names, case-insensitive)."""
    from crrg.errors import InputError

    lookup = {n.lower(): n for n in model_labels}
    missing = [n for n in folder_labels if n.lower() not in lookup]
    if missing:
        raise InputError(f"the image folder's classes {missing} are not labels of this model ({', '.join(model_labels)})")
    return [lookup[n.lower()] for n in folder_labels]


def _print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    table = Table("label", "AUC", "accuracy", "F1", "threshold", "positive", "negative")
    for name, auc in report["auc"].items():
        support = report["support"][name]
        table.add_row(name, fmt(auc), fmt(report["accuracy"][name]), fmt(report["f1"][name]),
                      fmt(report["thresholds"][name]), str(support["positive"]), str(support["negative"]))
    Console().print(table)
    typer.echo(f"macro AUC {fmt(report['macro_auc'])} over {report['labels_with_auc']} labels; "
               f"mean accuracy {fmt(report['mean_accuracy'])}; macro F1 {fmt(report['macro_f1'])}")


def register(app: typer.Typer) -> None:
    app.command("classify")(classify)
    app.command("evaluate-classifier")(evaluate_classifier)
