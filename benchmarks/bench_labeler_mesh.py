"""Labeler vs the MeSH major terms of the IU X-Ray reports: per-observation precision/recall/F1, speed.

Run by hand:  .venv/bin/python benchmarks/bench_labeler_mesh.py [--reports PATH] [--errors OBS]
Prints a table and writes benchmarks/results/labeler_mesh.json. Reports are findings + impression;
reports whose MeSH says "No Indexing" or that have no findings/impression text are left out.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from crrg.data.iu_xray import IuXrayReader
from crrg.io import atomic_write_json
from crrg.labeler import find_mentions, label_reports
from crrg.labeler.mesh import MACRO_TARGET, TARGETS, is_indexed, macro_f1, mesh_observations, score_against_mesh

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REPORTS = REPO.parent / "shared" / "data" / "iu_xray_reports" / "NLMCXR_reports.tgz"


def load(path: Path) -> tuple[list[str], list[str], list[list[str]]]:
    ids, texts, mesh = [], [], []
    for rec in IuXrayReader(path):
        terms = list(rec.meta.get("mesh_major") or [])
        if not is_indexed(terms) or not rec.report.strip():
            continue
        ids.append(rec.id)
        texts.append(rec.report)
        mesh.append(terms)
    return ids, texts, mesh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reports", type=Path, default=DEFAULT_REPORTS)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "labeler_mesh.json")
    ap.add_argument("--errors", default=None, help="print false positives/negatives of this observation")
    ap.add_argument("--max-errors", type=int, default=25)
    args = ap.parse_args()

    ids, texts, mesh = load(args.reports)
    t0 = time.perf_counter()
    labels = label_reports(texts)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    label_reports(texts)  # second pass: sentences already in the labeler's sentence cache
    warm = time.perf_counter() - t1
    result = {"reports": len(texts), "seconds": round(seconds, 3), "reports_per_second": round(len(texts) / seconds, 1),
              "reports_per_second_warm_cache": round(len(texts) / warm, 1),
              "machine": f"{platform.processor() or platform.machine()}, 1 process", "targets": TARGETS,
              "macro_target": MACRO_TARGET}
    for mode, unc in (("uncertain_as_negative", False), ("uncertain_as_positive", True)):
        scores = score_against_mesh(labels, mesh, uncertain_positive=unc)
        result[mode] = {"per_observation": {k: s.as_dict() for k, s in scores.items()}, "macro_f1": round(macro_f1(scores), 4)}
        print(f"\n{mode.replace('_', ' ')}  ({len(texts)} indexed IU X-Ray reports)")
        print(f"{'observation':28s} {'support':>7s} {'prec':>6s} {'recall':>6s} {'F1':>6s}  target")
        for name, s in scores.items():
            target = TARGETS.get(name)
            flag = "" if target is None else (f">= {target}  " + ("ok" if s.f1 >= target else "MISSED"))
            print(f"{name:28s} {s.support:7d} {s.precision:6.3f} {s.recall:6.3f} {s.f1:6.3f}  {flag}")
        print(f"{'macro F1':28s} {'':7s} {'':6s} {'':6s} {macro_f1(scores):6.3f}  >= {MACRO_TARGET}")
    print(f"\nspeed: {result['reports_per_second']:.0f} reports/s cold ({seconds:.2f} s for {len(texts)} reports), "
          f"{result['reports_per_second_warm_cache']:.0f} reports/s with the sentence cache warm")
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")

    if args.errors:
        shown = 0
        for i, (text, lab, terms) in enumerate(zip(texts, labels, mesh)):
            pred, ref = lab.get(args.errors) in (1, -1), args.errors in mesh_observations(terms)
            if pred != ref and shown < args.max_errors:
                shown += 1
                kind = "FP" if pred else "FN"
                ms = [(m.text, m.value) for m in find_mentions(text) if m.observation == args.errors or args.errors == "No Finding" and m.value != 0]
                print(f"\n[{kind}] {ids[i]} mesh={terms}\n  {text}\n  mentions={ms}")


if __name__ == "__main__":
    main()
