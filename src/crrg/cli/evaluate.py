"""``crrg evaluate``: score generated reports against reference reports (NLG + clinical efficacy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from crrg.cli.common import info

TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("bleu_1", "BLEU-1"), ("bleu_2", "BLEU-2"), ("bleu_3", "BLEU-3"), ("bleu_4", "BLEU-4"),
    ("meteor", "METEOR"), ("rouge_l", "ROUGE-L"), ("cider", "CIDEr"),
    ("ce_micro5_precision", "CE micro-5 precision"), ("ce_micro5_recall", "CE micro-5 recall"),
    ("ce_micro5_f1", "CE micro-5 F1"),
    ("ce_example14_precision", "CE example-14 precision"), ("ce_example14_recall", "CE example-14 recall"),
    ("ce_example14_f1", "CE example-14 F1"), ("ce_macro14_f1", "CE macro-14 F1"),
)


def read_reports(path: Path, split: Optional[str] = None) -> dict[str, str]:
    """``{id: report}`` from JSONL lines ``{"id", "report"}`` or from a crrg manifest (findings + impression).

    Lines with ``findings`` / ``impression`` but no ``report`` (e.g. ``crrg report`` output) are
    accepted too. Duplicate ids and malformed lines are errors naming the file and line.
    """
    from crrg.errors import InputError
    from crrg.io import iter_jsonl
    from crrg.records import HEADER_KEY, read_manifest, report_of_line

    if not path.is_file():
        raise InputError(f"{path} does not exist")
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    try:
        is_manifest = HEADER_KEY in json.loads(first)
    except (json.JSONDecodeError, TypeError):
        is_manifest = False
    if is_manifest:
        records = read_manifest(path, split=split, resolve_paths=False)
        return {r.id: r.report for r in records}
    if split is not None:
        raise InputError(f"--split only applies to a crrg manifest, and {path} is not one")
    out: dict[str, str] = {}
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict) or "id" not in obj:
            raise InputError(f"{path}:{lineno}: expected an object with \"id\" and \"report\"")
        key = str(obj["id"])
        text = report_of_line(obj)
        if text is None:
            raise InputError(f"{path}:{lineno}: no \"report\" field")
        if not isinstance(text, str):
            raise InputError(f"{path}:{lineno}: \"report\" must be a string")
        if key in out:
            raise InputError(f"{path}:{lineno}: duplicate id {key!r}")
        out[key] = text
    if not out:
        raise InputError(f"{path} contains no reports")
    return out


def metrics_table(metrics: dict, title: str):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in TABLE_ROWS:
        if key in metrics and metrics[key] is not None:
            table.add_row(label, f"{metrics[key]:.4f}")
    return table


def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Generated reports: JSONL lines {\"id\", \"report\"}."),
    ref: Path = typer.Option(..., "--ref", help="Reference reports: JSONL lines {\"id\", \"report\"}, or a crrg manifest."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the metrics as JSON here (atomically)."),
    split: Optional[str] = typer.Option(None, "--split", help="With a manifest as --ref: use only this split."),
    no_meteor: bool = typer.Option(False, "--no-meteor", help="Skip METEOR (its Java process needs about 2 GB and some seconds to start)."),
    no_clinical: bool = typer.Option(False, "--no-clinical", help="Skip clinical efficacy (labeler on both sides)."),
) -> None:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap protocol) and clinical efficacy (micro-5, example-14, macro-14)."""
    from rich.console import Console

    from crrg.evaluation import evaluate_reports
    from crrg.evaluation.nlg import check_same_ids
    from crrg.io import atomic_write_json

    preds = read_reports(pred)
    refs = read_reports(ref, split=split)
    check_same_ids(preds, refs)
    info(f"evaluating {len(refs)} reports" + ("" if no_meteor else " (starting METEOR)"))
    metrics = evaluate_reports(preds, refs, meteor=not no_meteor, clinical=not no_clinical)
    Console().print(metrics_table(metrics, f"{pred.name} vs {ref.name} ({len(refs)} reports)"))
    if out is not None:
        result = {
            "pred": str(pred), "ref": str(ref), "split": split, "n": len(refs),
            "protocol": "pycocoevalcap PTBTokenizer + Bleu(4)/Meteor/Rouge/Cider, corpus level; "
                        "CE from crrg.labeler, uncertain = positive",
            "metrics": metrics,
        }
        atomic_write_json(out, result)
        info(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
