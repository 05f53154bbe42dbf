"""Evaluation with intervals: a report generator against simple baselines, both protocols, both CE conventions.

    python benchmarks/bootstrap_eval.py --pred crrg_default.jsonl --data manifest.jsonl [--split test] \\
        [--resamples 1000] [--name bootstrap_eval]

``--pred`` holds ``crrg report`` batch output for the ``--split`` studies of ``--data``. The baselines
are made from the same manifest: ``shuffled`` (the test references, permuted: real reports of the
wrong study) and ``most_frequent`` (the commonest training report for every study). Every system is
scored by ``crrg.evaluation`` under ``coco`` and ``r2gen`` (IU X-Ray rules, vocabulary from the
training reports), with crrg's CE in both conventions, and a paired bootstrap gives 95% intervals of
every metric and of each difference from the model. It also times one bootstrap resample the old way
(pycocoevalcap's scorers on a duplicated-key corpus, as ``bootstrap_rrg.py`` did) and the new way
(:class:`crrg.evaluation.blocks.NlgBlock`), median and p95.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, median, percentile, print_table, save_results  # noqa: E402

log = logging.getLogger("bootstrap_eval")
ROWS = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "ce_micro5_f1", "ce_example14_f1", "ce_macro14_f1")


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from crrg.cli.evaluate import read_reports
    from crrg.evaluation.blocks import score_all
    from crrg.evaluation.bootstrap import draws, paired_bootstrap
    from crrg.evaluation.nlg import NlgScorer
    from crrg.evaluation.protocols import TextProtocol, r2gen_vocabulary
    from crrg.evaluation.reports import EvaluationConfig, build_blocks
    from crrg.records import read_manifest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--timing-resamples", type=int, default=20)
    parser.add_argument("--name", default="bootstrap_eval")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    test = read_manifest(args.data, split=args.split, resolve_paths=False)
    train = read_manifest(args.data, split="train", resolve_paths=False)
    refs = {r.id: r.report for r in test}
    model = read_reports(Path(args.pred), role="pred")
    refs = {k: v for k, v in refs.items() if k in model}
    ids = sorted(refs)
    shuffled_ids = ids[:]
    random.Random(0).shuffle(shuffled_ids)
    common = Counter(r.report for r in train).most_common(1)[0][0]
    systems = {"model": {k: model[k] for k in ids}, "shuffled": dict(zip(ids, (refs[k] for k in shuffled_ids))),
               "most_frequent": {k: common for k in ids}}
    vocab = r2gen_vocabulary([r.report for r in train], "iu_xray")
    settings = {
        "coco, CE crrg": EvaluationConfig(protocol=TextProtocol("coco"), ce_convention="crrg"),
        "coco, CE chexbert": EvaluationConfig(metrics=("ce",), ce_convention="chexbert"),
        "r2gen (iu_xray rules)": EvaluationConfig(metrics=("nlg",), protocol=TextProtocol("r2gen", "iu_xray", vocab)),
    }
    results: dict = {"machine": machine(), "pred": args.pred, "data": args.data, "split": args.split, "n": len(ids),
                     "resamples": args.resamples, "settings": {}}
    tables = []
    with NlgScorer() as scorer:
        for label, config in settings.items():
            blocks, full = {}, {}
            for name, preds in systems.items():
                blocks[name], keys = build_blocks(preds, refs, config, scorer)
                full[name] = score_all(blocks[name], np.arange(len(keys)))
            boot = paired_bootstrap(blocks, len(ids), full, resamples=args.resamples, seed=0)
            results["settings"][label] = {"protocol": config.protocol.describe(), "ce_convention": config.ce_convention,
                                          "metrics": full, "bootstrap": boot}
            rows = []
            for key in ROWS:
                if key not in full["model"]:
                    continue
                row = [key]
                for name in systems:
                    lo, hi = boot["systems"][name][key]
                    row.append(f"{full[name][key]:.3f} [{lo:.3f}, {hi:.3f}]")
                for diff in boot["differences"].values():
                    d = diff[key]
                    row.append(f"{d['difference']:+.3f} [{d['interval'][0]:+.3f}, {d['interval'][1]:+.3f}]")
                rows.append(row)
            header = ["metric", *systems, *boot["differences"]]
            tables.append(print_table(f"{label}: {len(ids)} {args.split} studies, 95% paired bootstrap "
                                      f"({args.resamples} resamples)", header, rows))

        # timing of one resample: the old way (pycocoevalcap on a duplicated-key corpus) and NlgBlock
        config = EvaluationConfig(metrics=("nlg",))
        blocks, keys = build_blocks(systems["model"], refs, config, scorer)
        block = blocks[0]
        rows_idx = draws(len(keys), args.timing_resamples, seed=1)
        block.score(rows_idx[0])  # cook once
        old, new = [], []
        for idx in rows_idx:
            gts = {f"{j}": block.gts[i] for j, i in enumerate(idx)}
            res = {f"{j}": block.res[i] for j, i in enumerate(idx)}
            t = time.perf_counter()
            scorer.score_tokenized(gts, res)
            old.append(time.perf_counter() - t)
            t = time.perf_counter()
            block.score(idx)
            new.append(time.perf_counter() - t)
    timing = {"old_s": {"median": median(old), "p95": percentile(old, 0.95)},
              "new_s": {"median": median(new), "p95": percentile(new, 0.95)}}
    results["resample_timing"] = timing
    tables.append(print_table(f"one bootstrap resample of {len(keys)} studies, all 7 NLG metrics (s, {args.timing_resamples} draws)",
                              ["method", "median", "p95"],
                              [["pycocoevalcap per resample (old)", timing["old_s"]["median"], timing["old_s"]["p95"]],
                               ["NlgBlock (cooked once)", timing["new_s"]["median"], timing["new_s"]["p95"]]]))
    save_results(args.name, results, "\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
