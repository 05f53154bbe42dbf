"""Is a report generator's lead over CLIP retrieval real? A paired bootstrap over the test studies.

    python benchmarks/bootstrap_rrg.py --model crrg-default --data /work/data/synth5k/manifest.jsonl \\
        --clip /work/runs/clip128_rare/model [--split test] [--resamples 1000] [--name rrg_synth5k_v5_bootstrap]

Both systems' reports are made once; each resample draws the studies with replacement and scores
both on the same draw with :func:`crrg.evaluation.bootstrap.paired_bootstrap` (corpus BLEU, METEOR,
ROUGE-L and CIDEr exactly as pycocoevalcap computes them on that corpus; the segments are cooked
once, so 1,000 resamples take minutes), so the spread of the difference is what the choice of test
studies alone would give.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, print_table, save_results  # noqa: E402

log = logging.getLogger("bootstrap_rrg")
METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from baselines import clip_retrieval_predictions
    from crrg.evaluation.blocks import score_all
    from crrg.evaluation.bootstrap import paired_bootstrap
    from crrg.evaluation.nlg import NlgScorer
    from crrg.evaluation.reports import EvaluationConfig, build_blocks
    from crrg.image import load_image
    from crrg.models.registry import load_pretrained
    from crrg.records import read_manifest
    from crrg.reporting import StudyInput

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--clip", required=True, help="the CLIP model of the retrieval baseline")
    parser.add_argument("--split", default="test")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="rrg_bootstrap")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    train = read_manifest(args.data, split="train")
    test = [r for r in read_manifest(args.data, split=args.split) if r.images]
    model = load_pretrained(args.model)
    ours = {}
    for k, r in enumerate(test):
        study = StudyInput(images=[load_image(i.path) for i in r.images], views=[i.view for i in r.images],
                           indication=r.indication, id=r.id)
        ours[r.id] = model.generate_report(study).report
        if (k + 1) % 50 == 0:
            log.info("reports: %d/%d", k + 1, len(test))
    retrieval = clip_retrieval_predictions(args.clip, train, test)
    refs = {r.id: r.report for r in test}
    config = EvaluationConfig(metrics=("nlg",))
    with NlgScorer() as scorer:
        blocks, full = {}, {}
        for name, preds in (("retrieval", retrieval), ("model", ours)):
            blocks[name], keys = build_blocks({k: preds[k] for k in refs}, refs, config, scorer)
            full[name] = score_all(blocks[name], np.arange(len(keys)))
        boot = paired_bootstrap(blocks, len(refs), full, resamples=args.resamples, seed=0)
    rows, results = [], {"machine": machine(), "model": args.model, "clip": args.clip, "split": args.split,
                         "n": len(refs), "resamples": args.resamples, "metrics": {}}
    for m in METRICS:
        d = boot["differences"]["model - retrieval"][m]
        low, high = d["interval"]
        rows.append([m, f"{full['model'][m]:.3f}", f"{full['retrieval'][m]:.3f}", f"{d['difference']:+.3f}",
                     f"[{low:+.3f}, {high:+.3f}]", f"{d['share_positive']:.2f}"])
        results["metrics"][m] = {"model": full["model"][m], "retrieval": full["retrieval"][m], "ci95": [low, high],
                                 "share_ahead": d["share_positive"],
                                 "model_ci95": boot["systems"]["model"][m], "retrieval_ci95": boot["systems"]["retrieval"][m]}
    table = print_table(f"{args.name}: {args.model} vs CLIP retrieval, paired bootstrap over {len(refs)} {args.split} studies",
                        ["metric", "model", "retrieval", "difference", "95% interval", "share of resamples ahead"], rows)
    save_results(args.name, results, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
