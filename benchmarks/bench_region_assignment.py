"""Sentence -> region assignment (crrg.data.region_assignment) against reference sentence-region pairs.

Each MANIFEST's regions carry the sentences their dataset relates to them: a Chest ImaGenome
manifest (``crrg data prepare mimic-cxr --imagenome``) or a synthetic one (``crrg synth generate``,
whose generator writes each sentence for the regions of the finding it draws). Scores are micro
precision / recall / F1 over (sentence, region) pairs, with the most frequent misses and false alarms.

    python benchmarks/bench_region_assignment.py NAME=MANIFEST [NAME=MANIFEST ...] [--max-studies 20000]

Results: a table on stdout and ``benchmarks/results/region_assignment.{json,md}``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import print_table, save_results  # noqa: E402

from crrg.data.region_assignment import assign_regions, reference_pairs, score_assignment  # noqa: E402
from crrg.records import iter_manifest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifests", nargs="+", help="NAME=MANIFEST")
    parser.add_argument("--max-studies", type=int, default=20000)
    args = parser.parse_args()
    rows, payload = [], {}
    for item in args.manifests:
        name, _, path = item.partition("=")
        records = itertools.islice((r for r in iter_manifest(path, resolve_paths=False) if r.regions), args.max_studies)
        pairs = list(reference_pairs(records))
        score = score_assignment(pairs)
        misses, alarms = Counter(), Counter()
        for sentence, reference in pairs:
            guess = set(assign_regions(sentence))
            misses.update(f"{sentence} -> {r}" for r in reference - guess)
            alarms.update(f"{sentence} -> {r}" for r in guess - reference)
        payload[name] = {"manifest": path, **score.to_dict(), "top_misses": misses.most_common(8),
                         "top_false_alarms": alarms.most_common(8)}
        rows.append([name, "lexicon", score.sentences, score.pairs_true, score.pairs_predicted, score.precision, score.recall, score.f1])
        # A floor to read the lexicon against: every sentence about both lungs (the most frequent pair).
        lungs = frozenset({"right lung", "left lung"})
        correct = sum(len(reference & lungs) for _, reference in pairs)
        p, r = correct / (2 * len(pairs) or 1), correct / (score.pairs_true or 1)
        rows.append([name, "both lungs", score.sentences, score.pairs_true, 2 * len(pairs), p, r, 2 * p * r / (p + r or 1)])
    table = print_table("sentence -> region assignment vs reference pairs (micro over pairs)",
                        ["reference", "assignment", "sentences", "pairs", "predicted", "precision", "recall", "F1"], rows)
    for name, result in payload.items():
        print(f"\n{name}: top misses {result['top_misses'][:4]}\n{name}: top false alarms {result['top_false_alarms'][:4]}")
    save_results("region_assignment", payload, table)


if __name__ == "__main__":
    main()
