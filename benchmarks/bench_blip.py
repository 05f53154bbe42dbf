"""ClinicalBLIP measurements, run by hand (never in CI): report-LM pretraining, trainable parameters per
stage, the prior-knowledge ablation with every crrg.evaluation metric, and latency per study.

    # 1. a small GPT-2 that writes report language (IU X-Ray reports + the train split of a manifest)
    python benchmarks/bench_blip.py pretrain-lm --out /work/runs/blip_lm --manifest /work/data/synth_small/manifest.jsonl
    # 2. train: crrg train blip --config configs/blip/stage1.yaml ... then stage2.yaml (see those files)
    # 3. parameters per stage, from the stage configs
    python benchmarks/bench_blip.py params --lm /work/runs/blip_lm
    # 4. ablation + metrics + latency on the test split
    python benchmarks/bench_blip.py evaluate --model RUN/model --manifest M.jsonl [--classifier CLS_RUN/model]

synth5k run: the commands are listed in benchmarks/results/blip_synth5k.md (full test split, all four
prompt variants, predicted findings from the CLIP linear probe).

Results are printed as tables and written to benchmarks/results/blip_*.json / .md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED = Path(os.environ.get("CRRG_SHARED_DATA", REPO.parent / "shared" / "data"))
log = logging.getLogger("bench_blip")
sys.path.insert(0, str(REPO / "benchmarks"))
from common import machine  # noqa: E402


def machine_with_load() -> str:
    """The machine, and how busy it was when the measurement ended (other jobs slow timings down)."""
    return f"{machine()}; load average {os.getloadavg()[0]:.1f}"


def report_texts(manifest: str | None) -> list[str]:
    """IU X-Ray report texts (all studies; none of them is in the synthetic test split) + a manifest's train split."""
    from crrg.blip.model import report_target
    from crrg.data.iu_xray import IuXrayReader
    from crrg.records import read_manifest

    texts = [report_target(r.findings, r.impression) for r in IuXrayReader(SHARED / "iu_xray_reports" / "NLMCXR_reports.tgz")]
    if manifest:
        texts += [report_target(r.findings, r.impression) for r in read_manifest(manifest, split="train")]
    # IU X-Ray repeats its normal reports many times; duplicates add cost, not language
    return list(dict.fromkeys(t for t in texts if t))


def cmd_pretrain_lm(args: argparse.Namespace) -> None:
    from crrg.blip.language_model import LmPretrainConfig, pretrain_report_lm

    texts = report_texts(args.manifest)
    config = LmPretrainConfig(vocab_size=args.vocab, n_layer=args.layers, n_embd=args.width, n_head=args.heads, epochs=args.epochs)
    start = time.time()
    losses: list[float] = []
    pretrain_report_lm(texts, args.out, config, on_epoch=lambda e, l: (losses.append(l), print(f"epoch {e}: loss {l:.3f}", flush=True)))
    result = {"texts": len(texts), "config": config.__dict__, "epoch_losses": losses, "seconds": round(time.time() - start, 1),
              "out": str(args.out), "machine": machine_with_load()}
    print(json.dumps(result, indent=2))
    from crrg.io import atomic_write_json

    atomic_write_json(RESULTS / f"{args.name}.json", result)


def stage_counts(lm: str, stage1: str, stage2: str, overrides: list[str] | None = None) -> dict:
    from crrg.blip.lora import parameter_counts
    from crrg.blip.task import build_blip
    from crrg.training.config import load_config

    rows = {}
    model = None
    for stage, path in (("1", stage1), ("2", stage2)):
        cfg = load_config(Path(path), [f"model.lm_pretrained={lm}", *((overrides or []) if stage == "1" else [])])
        if stage == "2":  # stage 2 continues from stage 1's model: reuse it rather than a saved folder
            from crrg.blip import lora as lora_lib

            for part, spec in (cfg.get("lora") or {}).items():
                if spec and not lora_lib.has_lora(model, part):
                    model.add_adapters(part, spec)
            lora_lib.set_trainable(model, cfg.get("trainable") or lora_lib.STAGE_DEFAULTS[2])
        else:
            model = build_blip(cfg)
        table = parameter_counts(model)
        rows[f"stage{stage}"] = {"groups": table, "trainable": sum(r["trainable"] for r in table.values()),
                                 "total": sum(r["total"] for r in table.values())}
    return rows


def cmd_params(args: argparse.Namespace) -> None:
    rows = stage_counts(args.lm, args.stage1, args.stage2, args.set)
    lines = ["| stage | group | total | trainable |", "|---|---|---:|---:|"]
    for stage, row in rows.items():
        for group, c in sorted(row["groups"].items()):
            lines.append(f"| {stage} | {group} | {c['total']:,} | {c['trainable']:,} |")
        lines.append(f"| {stage} | **all** | {row['total']:,} | **{row['trainable']:,}** ({100 * row['trainable'] / row['total']:.1f}%) |")
    text = "\n".join(lines)
    print(text)
    from crrg.io import atomic_write_json, atomic_write_text

    atomic_write_json(RESULTS / f"{args.name}.json", rows)
    atomic_write_text(RESULTS / f"{args.name}.md", text + "\n")


def _predicted_findings(classifier_path: str | None, records) -> dict[str, dict[str, float]] | None:
    if not classifier_path:
        return None
    from crrg.clip.data import primary_image
    from crrg.clip.predict import load_classifier
    from crrg.image import load_image

    classifier = load_classifier(classifier_path)
    out = {}
    for r in records:
        probs = classifier.probabilities([load_image(primary_image(r))])[0]
        out[r.id] = {n: float(p) for n, p in zip(classifier.names, probs)}
    return out


def cmd_evaluate(args: argparse.Namespace) -> None:
    import torch

    from crrg.blip.data import usable_records
    from crrg.blip.model import report_target
    from crrg.blip.prompts import labels_to_probabilities
    from crrg.evaluation import evaluate_reports
    from crrg.image import load_image
    from crrg.io import atomic_write_json, atomic_write_text
    from crrg.models.registry import load_pretrained
    from crrg.records import read_manifest
    from crrg.reporting import StudyInput

    torch.set_num_threads(args.threads)
    model = load_pretrained(args.model)
    records = usable_records(read_manifest(args.manifest, split=args.split))[: args.limit]
    predicted = _predicted_findings(args.classifier, records)
    refs = {r.id: r.report for r in records}
    studies = {r.id: StudyInput(images=[load_image(im.path) for im in r.images], views=[im.view for im in r.images],
                                indication=r.indication, id=r.id) for r in records}
    variants = [v for v in args.variants.split(",") if v != "predicted" or predicted is not None]
    results, samples = {}, {}
    for variant in variants:
        preds, latencies = {}, []
        for r in records:
            findings = None
            if variant == "ground_truth":
                findings = labels_to_probabilities(r.labels)
            elif variant == "predicted":
                findings = predicted[r.id]
            start = time.perf_counter()
            report = model.generate_report(studies[r.id], findings=findings, prompt_variant=variant, num_beams=args.beams)
            latencies.append(time.perf_counter() - start)
            preds[r.id] = report.report
        metrics = evaluate_reports(preds, refs)
        metrics["meteor_nltk_no_synonyms"] = nltk_meteor(preds, refs)
        metrics["latency_ms_per_study"] = 1000 * sum(latencies) / len(latencies)
        results[variant] = metrics
        samples[variant] = {k: preds[k] for k in list(preds)[:3]}
        print(variant, json.dumps({k: v for k, v in _flat(metrics).items()}, indent=None), flush=True)
    out = {"model": str(args.model), "manifest": str(args.manifest), "split": args.split, "studies": len(records),
           "classifier": args.classifier, "beams": args.beams, "threads": args.threads,
           "machine": machine_with_load(), "results": results, "samples": samples,
           "references": {k: refs[k] for k in list(refs)[:3]}}
    for extra in args.attach or []:  # e.g. the parameter counts per stage, so one file holds the whole measurement
        key, _, path = extra.partition("=")
        out[key] = json.loads(Path(path).read_text())
    name = args.name or f"blip_eval_{args.tag}"
    atomic_write_json(RESULTS / f"{name}.json", out)
    table = ablation_table(results)
    print(table)
    atomic_write_text(RESULTS / f"{name}.md", table + "\n")


class _NoWordNet:
    """Stands in for NLTK's WordNet corpus, which cannot be downloaded here: no synonym stage."""

    def synsets(self, *args, **kwargs) -> list:
        return []


def nltk_meteor(preds: dict[str, str], refs: dict[str, str]) -> float:
    """Mean sentence-level NLTK METEOR over studies (the scale the ClinicalBLIP paper's 0.570 is on).

    Lower-cased, punctuation split off; exact and Porter-stem matching only (WordNet synonyms need the
    NLTK WordNet data, not installable offline), so this is a slight lower bound of full NLTK METEOR.
    """
    import re

    from nltk.translate.meteor_score import meteor_score

    def tokens(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    scores = [meteor_score([tokens(refs[k])], tokens(preds[k]), wordnet=_NoWordNet()) for k in refs]
    return sum(scores) / len(scores)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)):
            out[f"{prefix}{k}"] = round(float(v), 4)
    return out


TABLE_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "meteor_nltk_no_synonyms", "rouge_l", "cider",
              "ce_micro5_f1", "ce_example14_f1", "latency_ms_per_study")


def ablation_table(results: dict) -> str:
    rows = []
    for variant, metrics in results.items():
        rows.append(f"| {variant} | " + " | ".join(
            f"{metrics[k]:.0f}" if k.startswith("latency") else f"{metrics.get(k, float('nan')):.3f}" for k in TABLE_KEYS) + " |")
    head = "| prompt | " + " | ".join(TABLE_KEYS) + " |"
    return "\n".join([head, "|---" * (len(TABLE_KEYS) + 1) + "|", *rows])


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain-lm")
    p.add_argument("--out", required=True)
    p.add_argument("--manifest")
    p.add_argument("--vocab", type=int, default=3000)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--name", default="blip_lm_pretrain", help="result file name under benchmarks/results (no suffix)")
    p.set_defaults(func=cmd_pretrain_lm)
    p = sub.add_parser("params")
    p.add_argument("--lm", required=True)
    p.add_argument("--stage1", default=str(REPO / "configs" / "blip" / "stage1.yaml"))
    p.add_argument("--stage2", default=str(REPO / "configs" / "blip" / "stage2.yaml"))
    p.add_argument("--set", action="append", help="dotted override for the stage-1 config (e.g. the CLIP checkpoint)")
    p.add_argument("--name", default="blip_params", help="result file name under benchmarks/results (no suffix)")
    p.set_defaults(func=cmd_params)
    p = sub.add_parser("evaluate")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--classifier")
    p.add_argument("--variants", default="none,indication,predicted,ground_truth")
    p.add_argument("--beams", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="synth_test")
    p.add_argument("--name", help="result file name under benchmarks/results (default blip_eval_TAG)")
    p.add_argument("--attach", action="append", help="KEY=FILE.json: store that JSON under KEY in the result file")
    p.set_defaults(func=cmd_evaluate)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
