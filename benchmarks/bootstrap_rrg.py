"""Is a report generator's lead over CLIP retrieval real? A paired bootstrap over the test studies.

    python benchmarks/bootstrap_rrg.py --model crrg-default --data /work/data/synth5k/manifest.jsonl \\
        --clip /work/runs/clip128_rare/model [--split test] [--resamples 200] [--name rrg_synth5k_v5_bootstrap]

Both systems' reports are made once; each resample draws the studies with replacement and scores
both on the same draw (corpus BLEU, ROUGE-L and CIDEr, pycocoevalcap), so the spread of the
difference is what the choice of 487 test studies alone would give. METEOR is left out: one Java
run per resample would take hours.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, percentile, print_table, save_results  # noqa: E402

log = logging.getLogger("bootstrap_rrg")
METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider")


def corpus_scores(gts: dict, res: dict, sample: list[str]) -> dict[str, float]:
    from crrg.evaluation import NlgScorer

    # a study drawn twice must count twice: give each draw its own key
    g = {f"{k}#{j}": gts[k] for j, k in enumerate(sample)}
    r = {f"{k}#{j}": res[k] for j, k in enumerate(sample)}
    return NlgScorer(meteor=False).score_tokenized(g, r)


def main(argv: list[str] | None = None) -> int:
    import torch

    from baselines import clip_retrieval_predictions
    from crrg.evaluation.nlg import tokenize
    from crrg.image import load_image
    from crrg.models.registry import load_pretrained
    from crrg.records import read_manifest
    from crrg.reporting import StudyInput

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--clip", required=True, help="the CLIP model of the retrieval baseline")
    parser.add_argument("--split", default="test")
    parser.add_argument("--resamples", type=int, default=200)
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
    ids = sorted(ours)
    refs = {r.id: r.report for r in test}
    gts = tokenize({k: [refs[k]] for k in ids})
    res_ours, res_base = tokenize({k: [ours[k]] for k in ids}), tokenize({k: [retrieval[k]] for k in ids})

    full_ours, full_base = corpus_scores(gts, res_ours, ids), corpus_scores(gts, res_base, ids)
    rng = random.Random(0)
    diffs: dict[str, list[float]] = {m: [] for m in METRICS}
    for i in range(args.resamples):
        sample = [rng.choice(ids) for _ in ids]
        a, b = corpus_scores(gts, res_ours, sample), corpus_scores(gts, res_base, sample)
        for m in METRICS:
            diffs[m].append(a[m] - b[m])
        if (i + 1) % 50 == 0:
            log.info("resamples: %d/%d", i + 1, args.resamples)
    rows, results = [], {"machine": machine(), "model": args.model, "clip": args.clip, "split": args.split,
                         "n": len(ids), "resamples": args.resamples, "metrics": {}}
    for m in METRICS:
        d = diffs[m]
        low, high = percentile(d, 0.025), percentile(d, 0.975)
        share = sum(x > 0 for x in d) / len(d)
        rows.append([m, f"{full_ours[m]:.3f}", f"{full_base[m]:.3f}", f"{full_ours[m] - full_base[m]:+.3f}",
                     f"[{low:+.3f}, {high:+.3f}]", f"{share:.2f}"])
        results["metrics"][m] = {"model": full_ours[m], "retrieval": full_base[m], "ci95": [low, high], "share_ahead": share}
    table = print_table(f"{args.name}: {args.model} vs CLIP retrieval, paired bootstrap over {len(ids)} {args.split} studies",
                        ["metric", "model", "retrieval", "difference", "95% interval", "share of resamples ahead"], rows)
    save_results(args.name, results, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
