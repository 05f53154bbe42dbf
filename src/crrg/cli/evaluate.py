"""``crrg evaluate``: score generated reports against references (NLG, clinical efficacy, the field's
model-based metrics), under a named protocol, with paired bootstrap intervals; ``crrg summarize-seeds``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from crrg.cli.common import info, progress

TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("bleu_1", "BLEU-1"), ("bleu_2", "BLEU-2"), ("bleu_3", "BLEU-3"), ("bleu_4", "BLEU-4"),
    ("meteor", "METEOR"), ("rouge_l", "ROUGE-L"), ("cider", "CIDEr"),
    ("ce_micro5_precision", "CE micro-5 precision"), ("ce_micro5_recall", "CE micro-5 recall"),
    ("ce_micro5_f1", "CE micro-5 F1"), ("ce_macro5_f1", "CE macro-5 F1"),
    ("ce_micro14_f1", "CE micro-14 F1"),
    ("ce_example14_precision", "CE example-14 precision"), ("ce_example14_recall", "CE example-14 recall"),
    ("ce_example14_f1", "CE example-14 F1"), ("ce_macro14_f1", "CE macro-14 F1"),
    ("chexbert_micro5_f1", "CheXbert micro-5 F1"), ("chexbert_macro5_f1", "CheXbert macro-5 F1"),
    ("chexbert_micro14_f1", "CheXbert micro-14 F1"), ("chexbert_macro14_f1", "CheXbert macro-14 F1"),
    ("chexbert_example14_f1", "CheXbert example-14 F1"), ("semb_score", "SembScore"),
    ("radgraph_simple", "RadGraph-XL F1 simple"), ("radgraph_partial", "RadGraph-XL F1 partial"),
    ("radgraph_complete", "RadGraph-XL F1 complete"), ("bertscore", "BERTScore"), ("ratescore", "RaTEScore"),
    ("radcliq_v1", "RadCliQ-v1 (lower better)"), ("radcliq_v1_inverse", "1/RadCliQ-v1"), ("green", "GREEN"),
)


def read_reports(path: Path, split: Optional[str] = None, role: str = "ref") -> dict[str, str]:
    """``{id: report}`` from JSONL lines ``{"id", "report"}``, a crrg manifest (findings + impression) or a
    ReXrank JSON (``role="ref"``: its ground truth "Findings: ... Impression: ..."; ``role="pred"``:
    its ``model_prediction``).

    Lines with ``findings`` / ``impression`` but no ``report`` (e.g. ``crrg report`` output) are
    accepted too. Duplicate ids and malformed lines are errors naming the file and line.
    """
    from crrg.data.rexrank import is_rexrank_json, read_rexrank_ground_truth, read_rexrank_predictions
    from crrg.errors import InputError
    from crrg.io import iter_jsonl
    from crrg.records import HEADER_KEY, read_manifest, report_of_line

    if not path.is_file():
        raise InputError(f"{path} does not exist")
    if is_rexrank_json(path):
        if split is not None:
            raise InputError(f"--split only applies to a crrg manifest, and {path} is a ReXrank JSON")
        return read_rexrank_predictions(path) if role == "pred" else read_rexrank_ground_truth(path)
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


def _interval(ci) -> str:
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def metrics_table(metrics: dict, title: str, systems: dict | None = None, boot: dict | None = None):
    """A rich table: one value column per system (with its bootstrap interval), then each difference."""
    from rich.table import Table

    systems = systems or {"value": metrics}
    names = list(systems)
    table = Table(title=title)
    table.add_column("metric")
    for name in names:
        table.add_column(name, justify="right")
        if boot:
            table.add_column(f"{int(boot['level'] * 100)}% CI", justify="right")
    diffs = (boot or {}).get("differences", {})
    for label in diffs:
        table.add_column(label, justify="right")
        table.add_column(f"{int(boot['level'] * 100)}% CI", justify="right")
    for key, label in TABLE_ROWS:
        if not any(key in m and m[key] is not None for m in systems.values()):
            continue
        row = [label]
        for name in names:
            value = systems[name].get(key)
            row.append("" if value is None else f"{value:.4f}")
            if boot:
                ci = boot["systems"].get(name, {}).get(key)
                row.append(_interval(ci) if ci else "")
        for d in diffs.values():
            item = d.get(key)
            row += [f"{item['difference']:+.4f}", _interval(item["interval"])] if item else ["", ""]
        table.add_row(*row)
    return table


def _system_names(paths: list[Path]) -> list[str]:
    stems = [p.stem for p in paths]
    return stems if len(set(stems)) == len(stems) else [str(p) for p in paths]


def evaluate(
    pred: list[Path] = typer.Option(..., "--pred", help="Generated reports: JSONL {\"id\", \"report\"} or a ReXrank submission JSON. Repeat to compare systems (the first is the baseline of the differences)."),
    ref: Path = typer.Option(..., "--ref", help="References: JSONL {\"id\", \"report\"}, a crrg manifest, or a ReXrank JSON (its \"Findings: ... Impression: ...\" ground truth)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the metrics as JSON here (atomically)."),
    split: Optional[str] = typer.Option(None, "--split", help="With a manifest as --ref: use only this split."),
    metrics: str = typer.Option("nlg,ce", "--metrics", help="Metric sets: nlg, ce (offline, the default), chexbert, semb, radgraph, bertscore, ratescore, radcliq, green, or all. The model-based ones need pip install 'crrg[clinical]'."),
    protocol: str = typer.Option("coco", "--protocol", help="Text processing before the NLG metrics: coco (pycocoevalcap PTB tokenizer) or r2gen (R2Gen's cleaning, <unk>, truncation)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="iu_xray or mimic_cxr: the dataset's R2Gen rules and lengths (required by --protocol r2gen; recorded in the output)."),
    r2gen_ann: Optional[Path] = typer.Option(None, "--r2gen-ann", help="--protocol r2gen: R2Gen annotation.json whose train reports give the vocabulary (rarer words become <unk>)."),
    ce_convention: str = typer.Option("crrg", "--ce-convention", help="crrg labeler CE: crrg (uncertain = positive) or chexbert (uncertain = negative, CheXbert-F1 aggregation)."),
    uncertain: str = typer.Option("negative", "--chexbert-uncertain", help="CheXbert F1: count an uncertain label as negative (default) or positive."),
    metrics_cache: Optional[Path] = typer.Option(None, "--metrics-cache", help="Folder for the model-based metrics' weights (default: $CRRG_METRICS_CACHE, else the packages' own caches)."),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0, help="Paired bootstrap resamples for 95% intervals (e.g. 1000); 0 = none."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap draws."),
    no_meteor: bool = typer.Option(False, "--no-meteor", help="Skip METEOR (its Java process needs about 2 GB and some seconds to start)."),
    no_clinical: bool = typer.Option(False, "--no-clinical", help="Skip crrg's clinical efficacy (same as leaving ce out of --metrics)."),
    device: str = typer.Option("auto", "--device", help="Model-based metrics: cpu, cuda, cuda:N or auto (a GPU when there is one)."),
) -> None:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr and clinical efficacy by default; the field's model-based metrics on request."""
    import numpy as np
    from rich.console import Console

    from crrg.errors import InputError
    from crrg.evaluation.blocks import score_all
    from crrg.evaluation.bootstrap import paired_bootstrap
    from crrg.evaluation.clinical import CE_CONVENTIONS
    from crrg.evaluation.clinical_models import ClinicalModels, package_versions, require_radeval, use_metrics_cache
    from crrg.evaluation.label_f1 import UNCERTAIN_POLICIES
    from crrg.evaluation.nlg import NlgScorer, check_same_ids
    from crrg.evaluation.protocols import DATASETS, TextProtocol, r2gen_vocabulary, read_r2gen_train_reports
    from crrg.evaluation.reports import MODEL_SETS, EvaluationConfig, build_blocks, parse_metric_sets
    from crrg.io import atomic_write_json

    sets = parse_metric_sets(metrics)
    if no_clinical:
        sets = tuple(s for s in sets if s != "ce")
    if ce_convention not in CE_CONVENTIONS:
        raise InputError(f"--ce-convention must be one of {', '.join(CE_CONVENTIONS)}")
    if uncertain not in UNCERTAIN_POLICIES:
        raise InputError(f"--chexbert-uncertain must be one of {', '.join(UNCERTAIN_POLICIES)}")
    if dataset is not None and dataset not in DATASETS:
        raise InputError(f"--dataset must be one of {', '.join(DATASETS)}")
    if r2gen_ann is not None and protocol != "r2gen":
        raise InputError("--r2gen-ann only applies to --protocol r2gen")
    vocabulary = r2gen_vocabulary(read_r2gen_train_reports(r2gen_ann), str(dataset)) if r2gen_ann and dataset else None
    text_protocol = TextProtocol(protocol, dataset, vocabulary)
    config = EvaluationConfig(metrics=sets, meteor=not no_meteor, protocol=text_protocol,
                              ce_convention=ce_convention, uncertain=uncertain)
    cache = use_metrics_cache(metrics_cache) if any(s in MODEL_SETS for s in sets) else None
    if cache is not None or any(s in MODEL_SETS for s in sets):
        require_radeval()  # fail in one line before any work

    refs = read_reports(ref, split=split, role="ref")
    names = _system_names(pred)
    all_preds = {name: read_reports(path, role="pred") for name, path in zip(names, pred)}
    for name, preds in all_preds.items():
        check_same_ids(preds, refs, what=f"{name} prediction")
    info(f"evaluating {len(refs)} reports x {len(names)} system(s): {', '.join(sets)}; {text_protocol.label()}")
    models = None
    if any(s in MODEL_SETS for s in sets):
        from crrg.generation import resolve_device

        models = ClinicalModels(uncertain=uncertain, device=str(resolve_device(device)))
    with NlgScorer(meteor="nlg" in sets and not no_meteor) as scorer:
        blocks, full = {}, {}
        for name, preds in all_preds.items():
            blocks[name], keys = build_blocks(preds, refs, config, scorer, models)
            full[name] = score_all(blocks[name], np.arange(len(keys)))
            full[name]["n"] = len(keys)
        boot = None
        if bootstrap:
            boot = paired_bootstrap(blocks, len(refs), full, resamples=bootstrap, seed=seed, progress=progress)
    first = full[names[0]]
    title = f"{' vs '.join(names)} against {ref.name} ({len(refs)} reports)"
    console = Console()
    console.print(text_protocol.label() + (f"; CE convention {ce_convention}" if "ce" in sets else "")
                  + (f"; paired bootstrap, {bootstrap} resamples, seed {seed}" if bootstrap else ""),
                  soft_wrap=True, markup=False, highlight=False)
    console.print(metrics_table(first, title, full if len(names) > 1 or boot else None, boot))
    skipped = models.skipped if models else {}
    for metric, why in skipped.items():
        info(f"{metric} skipped: {why}")
    if out is not None:
        result = {
            "pred": str(pred[0]), "preds": {n: str(p) for n, p in zip(names, pred)}, "ref": str(ref),
            "split": split, "n": len(refs), "metric_sets": list(sets),
            "protocol": text_protocol.describe(),
            "ce": {"labeler": "crrg.labeler", "convention": ce_convention,
                   "uncertain": "positive" if ce_convention == "crrg" else "negative"} if "ce" in sets else None,
            "chexbert_uncertain": uncertain if "chexbert" in sets else None,
            "metrics_cache": str(cache) if cache else None, "skipped": skipped,
            "packages": package_versions(),
            "metrics": first,
        }
        if len(names) > 1:
            result["systems"] = full
        if boot is not None:
            result["bootstrap"] = boot
        atomic_write_json(out, result)
        info(f"wrote {out}")


def summarize_seeds_command(
    runs: list[Path] = typer.Argument(..., help="Metrics JSONs (crrg evaluate --out) of runs that differ only in the seed."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the summary as JSON here (atomically)."),
) -> None:
    """Mean ± sd of every metric over several runs (seeds)."""
    from rich.console import Console
    from rich.table import Table

    from crrg.evaluation.seeds import summarize_seeds
    from crrg.io import atomic_write_json

    summary = summarize_seeds(runs)
    labels = dict(TABLE_ROWS)
    table = Table(title=f"mean ± sd over {len(runs)} runs")
    table.add_column("metric")
    table.add_column("mean ± sd", justify="right")
    table.add_column("runs", justify="right")
    for key, item in summary["metrics"].items():
        sd = "n/a" if item["sd"] is None else f"{item['sd']:.4f}"
        table.add_row(labels.get(key, key), f"{item['mean']:.4f} ± {sd}", str(item["n"]))
    Console().print(table)
    if out is not None:
        atomic_write_json(out, summary)
        info(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("summarize-seeds")(summarize_seeds_command)
