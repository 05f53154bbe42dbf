"""Gather one CLIP run's measurements into a results table (JSON + Markdown).

The numbers come from the commands' own output files, so the table cannot drift from them:
``crrg evaluate-classifier --out DIR`` (zero-shot and linear probe: DIR/metrics.json), the training
run's metrics.json, ``benchmarks/baselines.py --out`` and ``benchmarks/bench_clip.py``.
Run by hand after those::

    python benchmarks/clip_results_table.py --name clip_synth5k --run /work/runs/clip_synth5k \\
        --zeroshot /work/runs/clip_synth5k_eval_zeroshot --probe /work/runs/clip_synth5k_eval_probe \\
        [--reference "start model=/work/runs/clip_synth5k_eval_init_zeroshot"] \\
        [--baselines /work/runs/rrg_baselines_synth5k.json] [--bench benchmarks/results/bench_clip_96px.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from crrg.io import atomic_write_json, atomic_write_text

REPORT_METRICS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]


def read_json(path: Path | None) -> dict | None:
    return json.loads(Path(path).read_text()) if path else None


def classifier_metrics(folder: Path | None) -> dict | None:
    return read_json(Path(folder) / "metrics.json") if folder else None


def fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("-" if value is None else str(value))


def report_rows(baselines: dict) -> list[str]:
    """One Markdown row per baseline; metric names are matched loosely (the evaluator's own key spelling)."""
    def pick(scores: dict, name: str):
        wanted = name.lower().replace("-", "").replace("_", "")
        for key, value in scores.items():
            if key.lower().replace("-", "").replace("_", "") == wanted and isinstance(value, (int, float)):
                return float(value)
        return None

    ce_keys = lambda scores: [k for k in scores if k.lower().startswith("ce") and k.lower().endswith("f1")
                              and isinstance(scores[k], (int, float))]
    first = next(iter(baselines.values()))
    ces = ce_keys(first)
    lines = ["| baseline | " + " | ".join(REPORT_METRICS + ces) + " |", "|---" * (1 + len(REPORT_METRICS) + len(ces)) + "|"]
    for name, scores in baselines.items():
        values = [pick(scores, m) for m in REPORT_METRICS] + [float(scores[k]) for k in ces]
        lines.append(f"| {name} | " + " | ".join(fmt(v) for v in values) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="Result file stem under benchmarks/results/.")
    parser.add_argument("--run", type=Path, required=True, help="The CLIP training run folder (its metrics.json and config.json).")
    parser.add_argument("--zeroshot", type=Path, required=True)
    parser.add_argument("--probe", type=Path, default=None)
    parser.add_argument("--reference", action="append", default=[], help="NAME=EVAL_DIR: another zero-shot evaluation to show beside.")
    parser.add_argument("--baselines", type=Path, default=None)
    parser.add_argument("--bench", type=Path, action="append", default=[])
    parser.add_argument("--note", action="append", default=[], help="A line for the Markdown notes.")
    args = parser.parse_args(argv)

    zeroshot, probe = classifier_metrics(args.zeroshot), classifier_metrics(args.probe)
    references = {}
    for item in args.reference:
        name, _, folder = item.partition("=")
        references[name] = classifier_metrics(Path(folder))
    run = read_json(args.run / "metrics.json")
    config = read_json(args.run / "config.json")
    baselines = read_json(args.baselines)
    bench = [read_json(p) for p in args.bench]
    result = {"run": str(args.run), "training": run, "config": config, "zeroshot": zeroshot, "linear_probe": probe,
              "references": references, "report_baselines": baselines, "bench": bench, "notes": args.note}
    out = Path(__file__).parent / "results"
    atomic_write_json(out / f"{args.name}.json", result)

    columns = [("zero-shot", zeroshot)] + [(f"zero-shot, {k}", v) for k, v in references.items()]
    columns += [("linear probe", probe)] if probe else []
    lines = [f"# {args.name}", "", f"Run: `{args.run}`; {run.get('global_step')} steps, {run.get('epoch')} epochs, "
             f"{run.get('wall_seconds', 0) / 60:.1f} min wall. Test split: {zeroshot.get('n_images')} images.", "",
             "| finding | " + " | ".join(f"{name} AUC" for name, _ in columns) + " | positives |",
             "|---" * (len(columns) + 2) + "|"]
    for label in zeroshot["auc"]:
        values = [m["auc"].get(label) if m else None for _, m in columns]
        lines.append(f"| {label} | " + " | ".join(fmt(v) for v in values) + f" | {zeroshot['support'][label]['positive']} |")
    lines.append("| **macro** | " + " | ".join(f"**{fmt(m['macro_auc'])}**" if m else "-" for _, m in columns) + " | |")
    if baselines:
        lines += ["", "## Report baselines (test split)", ""] + report_rows(baselines)
    for b in bench:
        lines += ["", f"## Speed ({b.get('machine')})", "", "| measure | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in b.items() if k not in ("machine",)]
    if args.note:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in args.note]
    atomic_write_text(out / f"{args.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
