"""The two report baselines every generator must beat, computed on the same split the same way.

(i)  ``most_frequent``: the most frequent training report, for every test study;
(ii) ``clip_retrieval``: the report of the training study whose CLIP image embedding is nearest to
     the test study's (``crrg.clip.retrieval``), i.e. a trained CLIP model with an index of the
     training split.

Usable as a library (``benchmarks/bench_rrg.py`` imports it) or on its own::

    python benchmarks/baselines.py --data M.jsonl [--clip CLIP_MODEL_DIR] [--split test] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

log = logging.getLogger("baselines")


def most_frequent_report(train_records) -> str:
    """The training report that occurs most often (compared after metric normalisation)."""
    from crrg.text import normalize_for_metrics

    counts: Counter = Counter()
    first: dict[str, str] = {}
    for r in train_records:
        if not r.report:
            continue
        key = normalize_for_metrics(r.report)
        counts[key] += 1
        first.setdefault(key, r.report)
    if not counts:
        raise SystemExit("no training report to choose from")
    key, _ = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    return first[key]


def most_frequent_predictions(train_records, test_records) -> dict[str, str]:
    report = most_frequent_report(train_records)
    return {r.id: report for r in test_records}


def clip_retrieval_predictions(clip_dir: str, train_records, test_records) -> dict[str, str]:
    """Nearest training report by CLIP image embedding (index rebuilt on exactly this training split)."""
    from crrg.clip.retrieval import build_index, generate_report
    from crrg.models.registry import load_pretrained
    from crrg.reporting import StudyInput

    from crrg.image import load_image

    model = load_pretrained(clip_dir)
    model.retrieval = build_index(model, train_records)
    preds = {}
    for r in test_records:
        images = [load_image(im.path) for im in r.images]
        out = generate_report(model, StudyInput(images=images, views=[im.view for im in r.images], id=r.id))
        preds[r.id] = out.report
    return preds


def main(argv: list[str] | None = None) -> int:
    from crrg.evaluation import evaluate_reports
    from crrg.io import atomic_write_json
    from crrg.records import read_manifest

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--clip", default=None, help="a trained CLIP model folder (for the retrieval baseline)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    train = read_manifest(args.data, split="train")
    test = read_manifest(args.data, split=args.split)
    refs = {r.id: r.report for r in test}
    results = {"most_frequent": evaluate_reports(most_frequent_predictions(train, test), refs)}
    if args.clip:
        t0 = time.perf_counter()
        results["clip_retrieval"] = evaluate_reports(clip_retrieval_predictions(args.clip, train, test), refs)
        results["clip_retrieval"]["seconds"] = time.perf_counter() - t0
    print(json.dumps(results, indent=2))
    if args.out:
        atomic_write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
