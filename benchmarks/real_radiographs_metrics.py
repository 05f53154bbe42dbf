"""The scores of ``real_radiographs.py``: from the per-film rows of one version to its numbers, and the table."""

from __future__ import annotations

import random
from pathlib import Path

from common import median, percentile, print_table
from real_radiographs import ABNORMAL_SCORES, LUNGS, NIH_TO_CHEXPERT, OPACITY_SCORES

REAL_SETS = ("nih", "covid", "fullsize", "iu")


def auc(y: list[int], s: list[float]) -> float | None:
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(y, s)), 4) if 0 < sum(y) < len(y) else None


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def chosen_score(candidates: dict, rows: list[dict], positive) -> tuple[str, dict]:
    """The candidate score with the higher AUC on NIH ``train/`` films (``positive(labels)`` True / False /
    None to leave a film out), and every candidate's train AUC."""
    train = [r for r in rows if r["split"] == "train" and positive(r["labels"]) is not None]
    aucs = {name: auc([int(positive(r["labels"])) for r in train], [f(r["probabilities"]) for r in train])
            for name, f in candidates.items()}
    best = max(aucs, key=lambda k: aucs[k] if aucs[k] is not None else -1)
    return best, aucs


def nih_metrics(items: list[dict], out: dict) -> dict:
    rows = [dict(it, **out[it["id"]]) for it in items if it["set"] == "nih" and "probabilities" in out.get(it["id"], {})]
    valid = [r for r in rows if r["split"] == "valid"]
    res: dict = {"n_valid": len(valid), "auc": {}, "n_positive": {}}
    for name in sorted(set(NIH_TO_CHEXPERT.values())):
        nih_names = {k for k, v in NIH_TO_CHEXPERT.items() if v == name}
        y = [int(bool(nih_names & set(r["labels"]))) for r in valid]
        res["auc"][name] = auc(y, [r["probabilities"].get(name, 0.0) for r in valid])
        res["n_positive"][name] = sum(y)
    abnormal = lambda labels: labels != ["No Finding"]  # noqa: E731
    best, train_aucs = chosen_score(ABNORMAL_SCORES, rows, abnormal)
    res["normal_vs_abnormal"] = {"score": best, "train_auc": train_aucs,
                                 "auc": auc([int(abnormal(r["labels"])) for r in valid],
                                            [ABNORMAL_SCORES[best](r["probabilities"]) for r in valid])}
    opacity = lambda labels: (True if {"Infiltration", "Consolidation", "Pneumonia"} & set(labels)  # noqa: E731
                              else False if labels == ["No Finding"] else None)
    res["opacity_score"], res["opacity_train_auc"] = chosen_score(OPACITY_SCORES, rows, opacity)
    return res


def covid_metrics(items: list[dict], out: dict, opacity_score: str) -> dict:
    rows = [dict(it, **out[it["id"]]) for it in items if it["set"] == "covid" and "probabilities" in out.get(it["id"], {})]
    boxed = [r for r in rows if r["lung_boxes"] and all(s in r.get("boxes", {}) for s in LUNGS)]
    res: dict = {"n_boxed": len(boxed)}
    for mapping, pairs in (("same side", {s: s for s in LUNGS}), ("swapped", dict(zip(LUNGS, LUNGS[::-1])))):
        ious = [iou(r["boxes"][ours], r["lung_boxes"][theirs]) for r in boxed for ours, theirs in pairs.items()
                if theirs in r["lung_boxes"]]
        res[mapping] = {"mean_iou": round(sum(ious) / len(ious), 4) if ious else None,
                        "hit_rate_iou_0.5": round(sum(v >= 0.5 for v in ious) / len(ious), 4) if ious else None,
                        "n_boxes": len(ious)}
    res["right_lung_x_centre_over_width"] = round(median(
        [(r["boxes"]["right lung"][0] + r["boxes"]["right lung"][2]) / 2 / r["size"][1] for r in boxed]), 3) if boxed else None
    labelled = [r for r in rows if r["finding"] != "todo"]
    y = [int(r["finding"] != "No Finding") for r in labelled]
    res["pneumonia_vs_normal"] = {"score": opacity_score, "n_pneumonia": sum(y), "n_normal": len(y) - sum(y),
                                  "auc": auc(y, [OPACITY_SCORES[opacity_score](r["probabilities"]) for r in labelled])}
    return res


def iu_metrics(items: list[dict], out: dict, shared: Path) -> dict:
    from crrg.evaluation import clinical_efficacy, nlg_metrics
    from real_radiographs import iu_report_pool

    studies = [it for it in items if it["set"] == "iu" and "findings" in out.get(it["id"], {})]
    if not studies:
        return {}
    refs = {it["id"]: it["reference"] for it in studies}
    preds = {it["id"]: " ".join(p for p in (out[it["id"]]["findings"], out[it["id"]]["impression"]) if p)
             for it in studies}

    def scores(p: dict) -> dict:
        s = {**nlg_metrics(p, refs, meteor=False), **clinical_efficacy(p, refs)}
        return {k: round(float(v), 4) for k, v in s.items() if isinstance(v, (int, float))}

    res = {"n_studies": len(studies), "model": scores(preds)}
    ids = sorted(refs)
    shifts = [scores({ids[i]: refs[ids[(i + k) % len(ids)]] for i in range(len(ids))}) for k in range(1, len(ids))]
    res["shuffled_among_these"] = {k: round(sum(s[k] for s in shifts) / len(shifts), 4) for k in shifts[0]} if shifts else {}
    pool = iu_report_pool(shared)
    others = [t for i, t in pool.items() if f"iu/{i}" not in refs]
    rng = random.Random(0)
    draws = [scores({i: rng.choice(others) for i in ids}) for _ in range(20)]
    res["random_iu_reports"] = {k: round(sum(d[k] for d in draws) / len(draws), 4) for k in draws[0]}
    return res


def nih_label_dict(labels: list[str]) -> dict:
    """NIH's official labels as a CheXpert label dict (1 = positive), what the labeler gives a report."""
    from crrg.observations import CHEXPERT_14

    found = {NIH_TO_CHEXPERT[n] for n in labels if n in NIH_TO_CHEXPERT}
    if labels == ["No Finding"]:
        found = {"No Finding"}
    return {name: (1 if name in found else None) for name in CHEXPERT_14}


def nih_report_metrics(items: list[dict], out: dict, shifts: int = 20) -> dict:
    """The written reports of NIH ``valid/`` films, labelled by crrg's labeler, against the films' own
    labels (which NIH text-mined from the radiologists' reports): the clinical scores of a real set
    with reports, beside the shuffled-report baseline in label space (each film given another valid
    film's labels; ``shifts`` random derangements averaged) and a report that always says normal."""
    from crrg.evaluation.clinical import ce_from_labels
    from crrg.labeler import label_reports

    valid = [dict(it, **out[it["id"]]) for it in items
             if it["set"] == "nih" and it["split"] == "valid" and "findings" in out.get(it["id"], {})]
    if not valid:
        return {}
    keys = ("ce_micro5_f1", "ce_example14_f1", "ce_macro14_f1")
    refs = [nih_label_dict(r["labels"]) for r in valid]
    preds = label_reports([" ".join(p for p in (r["findings"], r["impression"]) if p) for r in valid])
    rng = random.Random(0)
    draws = []
    for _ in range(shifts):
        order = list(range(len(refs)))
        rng.shuffle(order)
        draws.append(ce_from_labels([refs[i] for i in order], refs))
    normal = nih_label_dict(["No Finding"])
    score = lambda m: {k: round(float(m[k]), 4) for k in keys}  # noqa: E731
    return {"n": len(valid), "model": score(ce_from_labels(preds, refs)),
            "shuffled": {k: round(sum(d[k] for d in draws) / len(draws), 4) for k in keys},
            "always_normal": score(ce_from_labels([normal] * len(refs), refs))}


def summarise(items: list[dict], out: dict, extra: dict, shared: Path) -> dict:
    from crrg.rrg.contradictions import report_contradictions

    by_set: dict = {}
    for it in items:
        row = out.get(it["id"], {})
        s = by_set.setdefault(it["set"], {"films": 0, "refused": 0, "reports": 0, "contradicting": 0,
                                          "latency": [], "examples": [], "ood": [], "unreliable": 0, "routed": 0, "errors": {}})
        s["films"] += 1
        if "error" in row:
            s["refused"] += 1
            kind = row["error"].split(":", 1)[0]
            s["errors"][kind] = s["errors"].get(kind, 0) + 1
        if "findings" in row:
            s["reports"] += 1
            s["latency"].append(row["latency_s"])
            found = report_contradictions(row["findings"], row["impression"])
            if found:
                s["contradicting"] += 1
                if len(s["examples"]) < 3:
                    s["examples"].append(found[0])
        if row.get("ood"):
            s["ood"].append(row["ood"]["score"])
            s["unreliable"] += bool(row["ood"]["unreliable"])
            s["routed"] += row["ood"].get("finding_source") == "real"
    res: dict = {"sets": {}, **{k: round(extra[k], 2) for k in ("peak_rss_mb_synth", "peak_rss_mb", "load_s") if k in extra}}
    for name, s in by_set.items():
        lat = s.pop("latency")
        res["sets"][name] = {**{k: v for k, v in s.items() if k != "ood"}, "ood_scored": len(s["ood"]),
                             "latency_p50_s": round(median(lat), 3) if lat else None,
                             "latency_p95_s": round(percentile(lat, 0.95), 3) if lat else None}
    real_lat = [out[it["id"]]["latency_s"] for it in items
                if it["set"] in REAL_SETS and "latency_s" in out.get(it["id"], {})]
    synth_lat = [out[it["id"]]["latency_s"] for it in items if it["set"] == "synth" and "latency_s" in out.get(it["id"], {})]
    res["latency"] = {"real_p50_s": round(median(real_lat), 3), "real_p95_s": round(percentile(real_lat, 0.95), 3),
                      "synth_p50_s": round(median(synth_lat), 3), "synth_p95_s": round(percentile(synth_lat, 0.95), 3),
                      "n_real": len(real_lat), "n_synth": len(synth_lat)}
    real = [by_set[n] for n in REAL_SETS if n in by_set]
    res["contradicting_reports"] = {"real": sum(s["contradicting"] for s in real),
                                    "real_reports": sum(s["reports"] for s in real),
                                    "synth": by_set.get("synth", {}).get("contradicting", 0)}
    synth_ood = by_set.get("synth", {}).get("ood", [])
    if synth_ood:
        res["ood_auroc_vs_synth"] = {n: auc([0] * len(synth_ood) + [1] * len(by_set[n]["ood"]), synth_ood + by_set[n]["ood"])
                                     for n in REAL_SETS if n in by_set and by_set[n]["ood"]}
        res["ood_median"] = {n: round(median(by_set[n]["ood"]), 3) for n in by_set if by_set[n]["ood"]}
    res["nih"] = nih_metrics(items, out)
    res["nih_reports"] = nih_report_metrics(items, out)
    res["covid"] = covid_metrics(items, out, res["nih"]["opacity_score"])
    res["iu"] = iu_metrics(items, out, shared)
    return res


def table(summary: dict, args, n_items: int, wall: float) -> str:
    names = list(summary)
    rows: list[list] = []

    def row(label: str, get) -> None:
        values = []
        for n in names:
            try:
                v = get(summary[n])
            except (KeyError, TypeError, IndexError):
                v = None
            values.append("—" if v is None else v)
        rows.append([label, *values])

    for obs in sorted(set(NIH_TO_CHEXPERT.values())):
        row(f"NIH valid AUC {obs} (n+={summary[names[-1]]['nih']['n_positive'][obs]})", lambda s, o=obs: s["nih"]["auc"][o])
    row("NIH valid normal vs abnormal AUC", lambda s: s["nih"]["normal_vs_abnormal"]["auc"])
    row("  score (chosen on NIH train)", lambda s: s["nih"]["normal_vs_abnormal"]["score"])
    for key in ("ce_micro5_f1", "ce_example14_f1", "ce_macro14_f1"):
        row(f"NIH valid reports {key} (labels from the report)", lambda s, k=key: s["nih_reports"]["model"][k])
        row(f"  shuffled labels / always normal {key}",
            lambda s, k=key: f"{s['nih_reports']['shuffled'][k]:.3f} / {s['nih_reports']['always_normal'][k]:.3f}")
    row("COVID lung boxes mean IoU (same side)", lambda s: s["covid"]["same side"]["mean_iou"])
    row("COVID lung boxes hit rate IoU>=.5", lambda s: s["covid"]["same side"]["hit_rate_iou_0.5"])
    row("COVID lung boxes mean IoU (sides swapped)", lambda s: s["covid"]["swapped"]["mean_iou"])
    row("COVID pneumonia vs normal AUC", lambda s: s["covid"]["pneumonia_vs_normal"]["auc"])
    for key in ("bleu_1", "bleu_4", "rouge_l", "cider", "ce_micro5_f1", "ce_example14_f1"):
        row(f"IU 5 studies {key}", lambda s, k=key: s["iu"]["model"][k])
        row(f"  shuffled among the 5 / random IU report {key}",
            lambda s, k=key: f"{s['iu']['shuffled_among_these'][k]:.3f} / {s['iu']['random_iu_reports'][k]:.3f}")
    row("self-contradicting reports, real films", lambda s: f"{s['contradicting_reports']['real']} / "
        f"{s['contradicting_reports']['real_reports']}")
    row("self-contradicting reports, synthetic", lambda s: s["contradicting_reports"]["synth"])
    row("films refused (real)", lambda s: sum(s["sets"][n]["refused"] for n in REAL_SETS if n in s["sets"]))
    row("latency p50 / p95 real (s)", lambda s: f"{s['latency']['real_p50_s']:.3f} / {s['latency']['real_p95_s']:.3f}")
    row("latency p50 / p95 synthetic (s)", lambda s: f"{s['latency']['synth_p50_s']:.3f} / {s['latency']['synth_p95_s']:.3f}")
    for n in ("nih", "covid", "fullsize"):
        row(f"  latency p50 / p95 {n} (s)",
            lambda s, n=n: f"{s['sets'][n]['latency_p50_s']:.3f} / {s['sets'][n]['latency_p95_s']:.3f}")
    row("peak RSS after synthetic / after all (MB)", lambda s: f"{s['peak_rss_mb_synth']:.0f} / {s['peak_rss_mb']:.0f}")
    for n in REAL_SETS:
        row(f"OOD AUROC synthetic test vs {n}", lambda s, n=n: s["ood_auroc_vs_synth"][n])
        row(f"  flagged unreliable {n}", lambda s, n=n: _flagged(s["sets"][n]))
        row(f"  findings read by classifier_real {n}", lambda s, n=n: _flagged(s["sets"][n], "routed"))
    row("  flagged unreliable synthetic", lambda s: _flagged(s["sets"]["synth"]))
    row("  findings read by classifier_real synthetic", lambda s: _flagged(s["sets"]["synth"], "routed"))
    row("wall time of this version's pass (s)", lambda s: s["wall_s"])
    title = (f"real radiographs ({n_items} films/studies, limit {args.limit}, {args.threads} torch thread(s), "
             f"{'versions side by side' if args.parallel else 'one version at a time'}, "
             f"total {wall:.0f} s)")
    return print_table(title, ["measurement", *names], rows)


def _flagged(s: dict, key: str = "unreliable") -> str | None:
    return f"{s.get(key, 0)} / {s['ood_scored']}" if s["ood_scored"] else None
