"""Region-guided generator: train all stages, then measure it on a test split against the baselines.

    # train (each stage resumable: rerun with --resume after a kill); prints images/s per stage
    nice python benchmarks/bench_rrg.py train --config configs/rrg/synth-small.yaml \\
        --data /work/data/synth_small/manifest.jsonl --out /work/runs/rrg_small
    # evaluate: detector mAP@0.5 / IoU per region, report metrics with joint off / condition / rerank,
    # the two baselines, latency p50/p95 per study at the model's input size
    nice python benchmarks/bench_rrg.py eval --model /work/runs/rrg_small/joint/model \\
        --data /work/data/synth_small/manifest.jsonl [--clip CLIP_DIR] [--limit 60] [--name rrg_synth_small]

Results go to benchmarks/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, median, percentile, print_table, save_results  # noqa: E402

log = logging.getLogger("bench_rrg")
REPORT_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "ce_micro5_f1", "ce_example14_f1")


def cmd_train(args) -> None:
    from crrg.records import read_manifest
    from crrg.rrg.task import STAGES, stage_config, train_stages
    from crrg.training.config import load_config

    config = load_config(args.config, args.overrides)
    config.setdefault("data", {})["manifest"] = str(args.data)
    n_train = len(read_manifest(args.data, split=config["data"].get("train_split", "train")))
    stages = tuple(args.stages.split(",")) if args.stages else STAGES
    rows, timings = [], {}
    for stage in stages:
        t0 = time.perf_counter()
        train_stages(config, args.out, stages=stages[: stages.index(stage) + 1], resume=True)
        seconds = time.perf_counter() - t0
        trainer = stage_config(config, stage, None)["trainer"]
        if trainer.get("max_steps"):
            samples = int(trainer["max_steps"]) * int(trainer["batch_size"])
        else:
            samples = int(trainer.get("max_epochs") or 1) * n_train
        unit = "texts" if stage == "pretrain" else "images"
        if stage == "pretrain":
            from crrg.rrg.task import report_corpus

            samples = int(trainer.get("max_epochs") or 1) * len(report_corpus(config)) if not trainer.get("max_steps") else samples
        timings[stage] = {"seconds": seconds, "samples": samples, "per_second": samples / max(seconds, 1e-9), "unit": unit}
        rows.append([stage, f"{seconds:.0f}", samples, f"{samples / max(seconds, 1e-9):.2f} {unit}/s"])
    table = print_table("rrg training (stages run now; a stage already done shows ~0 s)",
                        ["stage", "seconds", "samples", "throughput"], rows)
    save_results(args.name + "_train", {"config": args.config, "data": str(args.data), "stages": timings}, table)


def _iou(a, b) -> float:
    import torch
    from torchvision.ops import box_iou

    return float(box_iou(torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32))[0, 0])


def average_precision(scored: list[tuple[float, bool]], n_gt: int) -> float:
    """All-point interpolated AP of ranked detections (score, is_true_positive)."""
    if n_gt == 0:
        return float("nan")
    scored = sorted(scored, key=lambda s: -s[0])
    tp = fp = 0
    precisions, recalls = [], []
    for _, hit in scored:
        tp += hit
        fp += not hit
        precisions.append(tp / (tp + fp))
        recalls.append(tp / n_gt)
    ap, prev_r = 0.0, 0.0
    for i, r in enumerate(recalls):
        ap += (r - prev_r) * max(precisions[i:])
        prev_r = r
    return ap


def cmd_eval(args) -> None:
    import numpy as np
    import torch

    from crrg.evaluation import NlgScorer, evaluate_reports
    from crrg.image import load_image
    from crrg.models.registry import load_pretrained
    from crrg.observations import ANATOMICAL_REGIONS
    from crrg.records import read_manifest
    from crrg.reporting import StudyInput
    from crrg.rrg import joint as joint_mod
    from crrg.rrg.task import frontal_index

    import baselines

    torch.set_num_threads(args.threads)
    model = load_pretrained(args.model)
    if args.classifier:
        joint_mod.attach_classifier(model, joint_mod.load_finding_source(args.classifier))
    train = read_manifest(args.data, split="train")
    test = [r for r in read_manifest(args.data, split=args.split) if r.images]
    if args.limit:
        test = test[: args.limit]
    refs = {r.id: r.report for r in test}
    modes = args.joint.split(",")
    preds = {m: {} for m in modes}
    latencies: list[float] = []
    ious = {name: [] for name in ANATOMICAL_REGIONS}
    scored = {name: [] for name in ANATOMICAL_REGIONS}
    n_gt = {name: 0 for name in ANATOMICAL_REGIONS}
    consistency = {m: [] for m in modes}
    if test:  # warm-up: the first call loads MiniLM and allocates; latency is per study after that
        first = test[0]
        model.generate_report(StudyInput(images=[load_image(im.path) for im in first.images],
                                         views=[im.view for im in first.images]))
    for k, record in enumerate(test):
        images = [load_image(im.path) for im in record.images]
        study = StudyInput(images=images, views=[im.view for im in record.images], indication=record.indication, id=record.id)
        for mode in modes:
            t0 = time.perf_counter()
            out = model.generate_report(study, joint=mode, num_beams=args.beams)
            if mode == modes[0]:
                latencies.append(time.perf_counter() - t0)
            preds[mode][record.id] = out.report
            consistency[mode].append(joint_mod.consistency(out.report, out.labels)["agreement"])  # labels: 0/1
        index = frontal_index(record)
        predicted = {r.name: r for r in out.regions}
        det = model.detector.detect([torch.as_tensor(images[index]).unsqueeze(0).expand(3, -1, -1).contiguous()])[0]
        for region in record.regions or []:
            if region.image != index:
                continue
            n_gt[region.name] += 1
            c = ANATOMICAL_REGIONS.index(region.name)
            iou = _iou(predicted[region.name].box, region.box)
            ious[region.name].append(iou)
            scored[region.name].append((float(det.scores[c]), iou >= 0.5))
        if (k + 1) % 10 == 0:
            log.info("evaluated %d/%d studies", k + 1, len(test))

    results: dict = {"model": args.model, "classifier": args.classifier, "data": str(args.data), "split": args.split,
                     "n": len(test), "beams": args.beams}
    with NlgScorer(meteor=True) as scorer:
        for mode in modes:
            results[f"rrg_joint_{mode}"] = evaluate_reports(preds[mode], refs, scorer=scorer)
            results[f"rrg_joint_{mode}"]["classifier_agreement"] = float(np.mean(consistency[mode]))
        results["baseline_most_frequent"] = evaluate_reports(baselines.most_frequent_predictions(train, test), refs,
                                                             scorer=scorer)
        if args.baselines:  # computed before by baselines.py on the same split (all studies of it)
            stored = json.loads(Path(args.baselines).read_text())
            if "clip_retrieval" in stored and not args.limit:
                results["baseline_clip_retrieval"] = stored["clip_retrieval"]
        elif args.clip:
            results["baseline_clip_retrieval"] = evaluate_reports(
                baselines.clip_retrieval_predictions(args.clip, train, test), refs, scorer=scorer)
    per_region = {name: {"ap50": average_precision(scored[name], n_gt[name]),
                         "mean_iou": float(np.mean(ious[name])) if ious[name] else float("nan")} for name in ANATOMICAL_REGIONS}
    results["detector"] = {"map50": float(np.nanmean([v["ap50"] for v in per_region.values()])),
                           "mean_iou": float(np.nanmean([v["mean_iou"] for v in per_region.values()])),
                           "per_region": per_region}
    results["latency_s"] = {"p50": median(latencies), "p95": percentile(latencies, 0.95), "threads": args.threads,
                            "image_size": model.det_cfg.image_size}
    results["examples"] = {rid: preds[modes[0]][rid] for rid in list(refs)[:3]}
    results["references"] = {rid: refs[rid] for rid in list(refs)[:3]}

    systems = [k for k in results if k.startswith(("rrg_", "baseline_"))]
    rows = [[s] + [results[s].get(key, float("nan")) for key in REPORT_KEYS] for s in systems]
    table = print_table(f"reports on {args.split} (n={len(test)})", ["system", *REPORT_KEYS], rows)
    table += "\n\n" + print_table("detector", ["region", "AP@0.5", "mean IoU"],
                                  [[n, v["ap50"], v["mean_iou"]] for n, v in per_region.items()]
                                  + [["ALL (mean)", results["detector"]["map50"], results["detector"]["mean_iou"]]])
    table += "\n\n" + print_table("latency per study (s)", ["p50", "p95", "threads", "image size"],
                                  [[results["latency_s"]["p50"], results["latency_s"]["p95"], args.threads,
                                    model.det_cfg.image_size]])
    save_results(args.name, results, table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--config", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--stages", default=None, help="comma-separated subset, in order (default: all)")
    t.add_argument("--name", default="rrg_synth_small")
    t.add_argument("--set", dest="overrides", action="append", default=[], help="dotted.key=value, as crrg train --set")
    e = sub.add_parser("eval")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="test")
    e.add_argument("--clip", default=None)
    e.add_argument("--classifier", default=None, help="saved classifier in charge of the labels it knows (joint design)")
    e.add_argument("--baselines", default=None, help="results JSON of baselines.py for the same split")
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--beams", type=int, default=1)
    e.add_argument("--joint", default="condition,off,rerank", help="joint modes; latency is timed on the first")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--name", default="rrg_synth_small")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"machine: {machine()}")
    (cmd_train if args.cmd == "train" else cmd_eval)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
