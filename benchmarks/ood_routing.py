"""OOD routing of the finding source, before/after in one process (crrg-default's ``classifier_real/``).

    python benchmarks/ood_routing.py [--model crrg-default] [--nih-limit N]

One model is loaded; every film is reported twice, with the routing off (``route_ood = False``: the
synthetic-trained CLIP classifier gives every film's findings, i.e. the model as it was before the real
child) and on (a film that reads as real, ``OODAssessment.reads_as_real``, takes them from ``real_finding_classifier``):

* **synthetic** (``/work/data/synth_reg`` 60 studies + ``examples/``): are the two reports identical
  (everything but ``timings_ms``)? They must be, but for the few synthetic films read as real.
* **NIH valid** (``nih1000_64px``): AUC per CheXpert observation of ``report.probabilities`` and normal
  vs abnormal, scored by ``real_radiographs_metrics.nih_metrics`` (the score chosen on NIH ``train/``).
  One token is decoded (the probabilities do not depend on the text).
* **IU** (the 5 sample studies): CE and NLG against the real reports beside the shuffled baselines
  (``real_radiographs_metrics.iu_metrics``).

Writes ``benchmarks/results/ood_routing.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from common import print_table, save_results
from real_radiographs import REPO, _manifest_items, _view, build_items
from real_radiographs_metrics import iu_metrics, nih_metrics


def _comparable(report) -> str:
    out = report.to_dict()
    out.pop("timings_ms", None)
    return json.dumps(out, sort_keys=True)


def run(model, items: list[dict]) -> tuple[dict, dict, dict]:
    """Rows (id -> row) before and after, and the synthetic comparison."""
    from crrg.image import load_image
    from crrg.reporting import StudyInput

    rows: dict = {"before": {}, "after": {}}
    synth = {"studies": 0, "identical": 0, "unreliable": 0, "routed": 0, "differing": []}
    for item in items:
        images = [load_image(p) for p in item["paths"]]
        study = StudyInput(images=images, views=[_view(v) for v in item["views"]], id=item["id"])
        extra = {"max_new_tokens": 1} if item["set"] == "nih" else {}
        reports = {}
        for name, route in (("before", False), ("after", True)):
            model.route_ood = route
            reports[name] = r = model.generate_report(study, **extra)
            rows[name][item["id"]] = {"probabilities": r.probabilities, "findings": r.findings,
                                      "impression": r.impression, "ood": r.ood}
        if item["set"] == "synth":
            synth["studies"] += 1
            same = _comparable(reports["before"]) == _comparable(reports["after"])
            synth["identical"] += same
            synth["unreliable"] += bool((reports["after"].ood or {}).get("unreliable"))
            synth["routed"] += (reports["after"].ood or {}).get("finding_source") == "real"
            if not same:
                synth["differing"].append(item["id"])
    model.route_ood = True
    return rows["before"], rows["after"], synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="crrg-default")
    parser.add_argument("--shared", default="/work/shared/data")
    parser.add_argument("--synth", default="/work/data/synth_reg/manifest.jsonl", help="every study of it is run")
    parser.add_argument("--nih-limit", type=int, default=None, help="at most N NIH films (quick runs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="ood_routing")
    args = parser.parse_args()

    import torch

    from crrg.models.registry import load_pretrained

    torch.set_num_threads(args.threads)
    shared = Path(args.shared)
    started = time.perf_counter()
    items = [it for it in build_items(shared, None, args.nih_limit, 0) if it["set"] in ("nih", "iu")]
    items += _manifest_items(REPO / "examples" / "manifest.jsonl", None, "synth-examples")
    if args.synth and Path(args.synth).is_file():
        items += _manifest_items(Path(args.synth), None, "synth-reg")
    model = load_pretrained(args.model)
    if getattr(model, "real_finding_classifier", None) is None:
        raise SystemExit(f"{args.model} has no real_finding_classifier: nothing to compare")
    before, after, synth = run(model, items)
    results = {}
    for name, out in (("before", before), ("after", after)):
        real = [r for it in items if it["set"] != "synth" for r in [out[it["id"]]]]
        results[name] = {"nih": nih_metrics(items, out), "iu": iu_metrics(items, out, shared),
                         "real_routed": sum((r["ood"] or {}).get("finding_source") == "real" for r in real),
                         "real_unreliable": sum(bool((r["ood"] or {}).get("unreliable")) for r in real),
                         "real_films": len(real)}
    labels = sorted(results["after"]["nih"]["auc"])
    table_rows = [[f"NIH valid AUC {n}", results["before"]["nih"]["auc"][n], results["after"]["nih"]["auc"][n],
                   results["after"]["nih"]["n_positive"][n]] for n in labels]
    for name in ("before", "after"):
        nva = results[name]["nih"]["normal_vs_abnormal"]
        results[name]["nva"] = f"{nva['auc']} ({nva['score']})"
    table_rows.append(["NIH valid normal vs abnormal", results["before"]["nva"], results["after"]["nva"],
                       results["after"]["nih"]["n_valid"]])
    for key in ("ce_micro5_f1", "ce_micro14_f1", "bleu4", "cider"):
        iu = {name: results[name]["iu"] for name in results}
        if key in iu["after"].get("model", {}):
            table_rows.append([f"IU {key} (shuffled {iu['after']['shuffled_among_these'].get(key)})",
                               iu["before"]["model"][key], iu["after"]["model"][key], iu["after"]["n_studies"]])
    table_rows.append(["real films routed to classifier_real", results["before"]["real_routed"],
                       results["after"]["real_routed"], results["after"]["real_films"]])
    table_rows.append(["synthetic reports identical", "-", f"{synth['identical']}/{synth['studies']}",
                       f"unreliable {synth['unreliable']}, routed {synth['routed']}"])
    wall = time.perf_counter() - started
    text = print_table(f"OOD routing, {args.model}: before = route_ood off, after = on (one process, {wall:.0f} s)",
                       ["metric", "before", "after", "n"], table_rows)
    save_results(args.name, {"model": args.model, "nih_limit": args.nih_limit, "threads": args.threads,
                             "load_1min": os.getloadavg()[0], "total_wall_s": round(wall, 1), "synthetic": synth,
                             "results": results}, text)


if __name__ == "__main__":
    main()
