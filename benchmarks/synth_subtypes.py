"""AUC per kind of inserted finding on a synthetic set: which findings a classifier can see at all.

A CheXpert label pools findings of very different size: "Lung Lesion" is a 4 cm mass or a 12 mm nodule,
"Support Devices" a pacemaker or one thin central line. The synthetic generator records what it
inserted (``studies/<id>.json``, ``meta.findings``), so the AUC of a label can be split by what its
positive studies contain, each group against all of the label's negatives. It tells a model that
cannot see small things from one that was not trained well. Run on the predictions that
``crrg evaluate-classifier --out DIR`` writes:

    crrg evaluate-classifier --model M --data /work/data/synth5k/manifest.jsonl --split test \
        --unknown negative --out /tmp/eval
    python benchmarks/synth_subtypes.py --predictions /tmp/eval/predictions.jsonl \
        --data /work/data/synth5k --name synth_subtypes_M

or, for the region-guided generator's own study-level finding head (256 px, supervised), on a split:

    python benchmarks/synth_subtypes.py --rrg-model crrg-default --split test --data /work/data/synth5k
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, save_results  # noqa: E402

from crrg.observations import CHEXPERT_14  # noqa: E402

SIZE_BINS_MM = (10, 20, 30)


def subtype(finding: dict) -> str:
    """A finding's kind, with its size bin (nodules, masses, granulomas) or device kinds."""
    kind, params = finding["kind"], finding.get("params") or {}
    if "size_mm" in params:
        size = float(params["size_mm"])
        lower = max([0, *[b for b in SIZE_BINS_MM if b <= size]])
        upper = next((b for b in SIZE_BINS_MM if b > size), None)
        return f"{kind} {lower}-{upper} mm" if upper else f"{kind} >= {lower} mm"
    if kind == "devices":
        kinds = sorted(params.get("kinds") or [])
        return f"devices: {kinds[0]} only" if len(kinds) == 1 else f"devices: {len(kinds)} kinds"
    return kind


def finding_labels(finding: dict) -> set[str]:
    """The CheXpert labels a finding makes positive, from the generator's own sentences about it (over
    several draws: a consolidation is reported as "Consolidation" in some wordings, "Pneumonia" in others)."""
    return set(_labels_of(json.dumps(finding, sort_keys=True)))


@lru_cache(maxsize=None)
def _labels_of(finding_json: str, draws: int = 32) -> frozenset[str]:
    import numpy as np

    from crrg.synth.findings import Finding
    from crrg.synth.reports import finding_sentences

    d = json.loads(finding_json)
    f = Finding(**{k: d[k] for k in ("kind", "severity", "side", "location", "params") if k in d})
    return frozenset(name for seed in range(draws) for s in finding_sentences(f, np.random.default_rng(seed))
                     for name, value in s.labels.items() if value == 1)


def subtype_aucs(predictions: list[dict], findings: dict[str, list[dict]]) -> list[dict]:
    """Rows (label, subtype, positives, AUC): each subtype's positives against all negatives of the label."""
    from sklearn.metrics import roc_auc_score

    rows = []
    labels = list(predictions[0]["probabilities"]) if predictions else []
    for label in labels:
        negatives = [p["probabilities"][label] for p in predictions if p["target"].get(label) == 0]
        groups: dict[str, list[float]] = defaultdict(list)
        for p in predictions:
            if p["target"].get(label) != 1:
                continue
            kinds = sorted({subtype(f) for f in findings.get(p["id"], []) if label in finding_labels(f)})
            groups[" + ".join(kinds) or "(none recorded)"].append(p["probabilities"][label])
        for name, scores in sorted(groups.items()):
            auc = roc_auc_score([1] * len(scores) + [0] * len(negatives), scores + negatives) if negatives else None
            rows.append({"label": label, "subtype": name, "positives": len(scores), "auc": auc})
    return rows


def rrg_head_predictions(model_path: str, data: Path, split: str) -> list[dict]:
    """Predictions of an rrg model's finding head (no attached classifier) in the predictions.jsonl layout,
    with the targets ``crrg evaluate-classifier --unknown negative`` uses (uncertain labels left out)."""
    import numpy as np

    from crrg.clip.data import labeled_from_records
    from crrg.clip.evaluate import targets_with_unknowns
    from crrg.image import load_image
    from crrg.models.registry import load_pretrained
    from crrg.records import read_manifest

    model = load_pretrained(model_path)
    items = labeled_from_records(read_manifest(data / "manifest.jsonl", split=split), CHEXPERT_14,
                                 uncertain="ignore", unknown="negative")
    out = []
    for item, truth in zip(items, targets_with_unknowns(items)):
        probs = model.analyse(load_image(item.path))[2]["findings"].tolist()
        out.append({"id": item.id, "probabilities": dict(zip(CHEXPERT_14, probs)),
                    "target": {n: (None if np.isnan(t) else int(t)) for n, t in zip(CHEXPERT_14, truth)}})
    return out


def read_findings(data: Path, ids: set[str]) -> dict[str, list[dict]]:
    found = {}
    for study_id in ids:
        path = data / "studies" / f"{study_id}.json"
        if path.is_file():
            found[study_id] = (json.loads(path.read_text()).get("meta") or {}).get("findings") or []
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, help="predictions.jsonl of crrg evaluate-classifier --out")
    source.add_argument("--rrg-model", help="an rrg model (folder or registered name): score its own finding head")
    parser.add_argument("--split", default="test", help="with --rrg-model: the manifest split")
    parser.add_argument("--data", type=Path, required=True, help="the crrg synth output folder (holds studies/)")
    parser.add_argument("--name", default="synth_subtypes", help="results file name under benchmarks/results/")
    parser.add_argument("--min-positives", type=int, default=1, help="leave out groups with fewer positives")
    args = parser.parse_args(argv)
    if args.predictions is not None and not args.predictions.is_file():
        parser.error(f"{args.predictions} does not exist")
    if not (args.data / "studies").is_dir():
        parser.error(f"{args.data} has no studies/ folder (is it a crrg synth output folder?)")
    if args.predictions is not None:
        predictions = [json.loads(line) for line in args.predictions.read_text().splitlines() if line.strip()]
        source_name = str(args.predictions)
    else:
        predictions = rrg_head_predictions(args.rrg_model, args.data, args.split)
        source_name = f"{args.rrg_model} finding head, {args.split}"
    findings = read_findings(args.data, {p["id"] for p in predictions})
    if not findings:
        parser.error(f"none of the predicted ids has a study file in {args.data / 'studies'}")
    rows = [r for r in subtype_aucs(predictions, findings) if r["positives"] >= args.min_positives]
    table = print_table(f"AUC by inserted finding ({len(predictions)} images, {source_name})",
                        ["label", "inserted", "positives", "AUC"],
                        [[r["label"], r["subtype"], r["positives"], r["auc"]] for r in rows])
    save_results(args.name, {"source": source_name, "rows": rows}, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
