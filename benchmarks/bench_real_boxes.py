"""The detector's lung boxes on real films, film by film, and why they miss (issue 20, detector IoU target).

    python benchmarks/bench_real_boxes.py [--model crrg-default] [--also NAME=MODEL ...]
        [--synth MANIFEST] [--fit-calibration NAME] [--name real_boxes]

Every film of ``covid_cxr`` with lung boxes (155, read from ``../shared/data``, never copied) goes
through each version's ``detector.detect`` in its own subprocess: the previous version's code
(``--baseline-src``, default ``/work/baseline/src``) with its bundled model ("before"), this
checkout's code with ``--model`` ("after") and with every ``--also`` model. The boxes are scored as
``real_radiographs.py`` scores them (its :func:`iou`, same side: crrg's and the set's "right lung" are
both the patient's right), so "before" here is that benchmark's detector number.

The films are split by patient (the collection has no patient id: source article + age + sex, which
keeps the films of one case together) into a **dev** half and a **test** half with a fixed seed;
settings are chosen on dev (or on synthetic val), test is reported, and all 155 for comparison with
earlier numbers. Misses are broken down by view, by the side of the box that is off (median edge
offset as a fraction of the annotated box: medial, lateral, top, bottom; positive = the detector's
edge lies outside the annotated box), by films whose annotated box leaves the image (annotation off
the pixels), by uniform borders and by washed-out contrast. ``--synth`` adds mAP@0.5 and mean IoU
over the 29 regions on the frontal films of that manifest's test split (the synthetic score must not
drop). ``--fit-calibration NAME`` prints the per-lung edge shifts (``DetectorConfig.box_calibration``)
that the median film of the dev half needs under version NAME; test never sees the fit.

Writes ``benchmarks/results/<name>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import add_worker_arguments, median, percentile, print_table, save_results, worker_command  # noqa: E402
from real_radiographs import LUNGS  # noqa: E402
from real_radiographs_metrics import iou  # noqa: E402

SPLIT_SEED = 0
BORDER_PX = 5  # uniform rows / columns at an edge that make a "bordered" film
WASHED_OUT_RANGE = 0.7  # 1st-99th percentile spread under which a film counts as washed out


# ----------------------------------------------------------------------------------------- films
def boxed_films(shared: Path) -> list[dict]:
    """The COVID films with lung boxes, each with its patient key and dev/test half."""
    covid = shared / "covid_cxr"
    rows = [json.loads(line) for line in (covid / "metadata.jsonl").read_text().splitlines() if line.strip()]
    films = [{"id": r["image"], "path": str(covid / r["image"]), "view": r.get("view") or "unknown",
              "patient": f"{r.get('source')}|{r.get('age')}|{r.get('sex')}",
              "lung_boxes": {b["name"]: b["box"] for b in r["lung_boxes"]}} for r in rows if r.get("lung_boxes")]
    patients = sorted({f["patient"] for f in films})
    random.Random(SPLIT_SEED).shuffle(patients)
    dev = set(patients[: len(patients) // 2])
    for f in films:
        f["half"] = "dev" if f["patient"] in dev else "test"
    return films


def synth_films(manifest: Path | None, split: str) -> list[dict]:
    if manifest is None:
        return []
    from crrg.observations import frontal_index
    from crrg.records import read_manifest

    out = []
    for r in read_manifest(manifest, split=split):
        if not r.images or not r.regions:
            continue
        i = frontal_index([im.view for im in r.images])
        if i is None:
            continue
        out.append({"id": r.id, "path": r.images[i].path,
                    "regions": {g.name: list(g.box) for g in r.regions if g.image == i}})
    return out


# ---------------------------------------------------------------------------------------- worker
def worker(args: argparse.Namespace) -> None:
    """Runs under either version's code: load_image, load_pretrained and detector.detect only."""
    import numpy as np
    import torch

    from crrg.image import load_image
    from crrg.models.registry import load_pretrained
    from crrg.observations import ANATOMICAL_REGIONS
    from crrg.rrg.detector import to_rgb_tensor

    torch.set_num_threads(1)
    items = json.loads(Path(args.items).read_text())
    model = load_pretrained(args.model).eval()
    with open(args.out, "w") as out:
        for item in items:
            image = load_image(item["path"])
            t = time.perf_counter()
            det = model.detector.detect([to_rgb_tensor(image)])[0]
            row = {"id": item["id"], "size": list(image.shape), "detect_s": time.perf_counter() - t,
                   "boxes": {n: det.boxes[i].tolist() for i, n in enumerate(ANATOMICAL_REGIONS)},
                   "scores": {n: float(det.scores[i]) for i, n in enumerate(ANATOMICAL_REGIONS)}}
            if item.get("lung_boxes"):  # image properties for the breakdown
                a = np.asarray(image)
                lo, hi = np.percentile(a, [1, 99])
                row["contrast_range"] = float(hi - lo)
                row["border_px"] = max(_uniform_run(a), _uniform_run(a[::-1]), _uniform_run(a.T), _uniform_run(a.T[::-1]))
            out.write(json.dumps(row) + "\n")


def _uniform_run(a, tol: float = 0.06) -> int:
    """How many leading rows of ``a`` are uniform (padding, a figure's frame, a shutter band)."""
    spread = a.max(1) - a.min(1)
    k = 0
    while k < len(spread) and spread[k] < tol:
        k += 1
    return k


def run_version(src: Path, model: str, items: list[dict], folder: Path, name: str) -> dict[str, dict]:
    (folder / "items.json").write_text(json.dumps(items))
    out = folder / f"{name}.jsonl"
    cmd, env = worker_command(__file__, src, model, folder / "items.json", out)
    if subprocess.run(cmd, env=env).returncode != 0:
        raise SystemExit(f"the {name} worker failed: {' '.join(cmd)}")
    return {r["id"]: r for r in (json.loads(line) for line in out.read_text().splitlines() if line.strip())}


# --------------------------------------------------------------------------------------- metrics
def lung_ious(films: list[dict], rows: dict) -> list[float]:
    return [iou(rows[f["id"]]["boxes"][side], f["lung_boxes"][side]) for f in films for side in LUNGS]


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "mean_iou": None, "hit_rate_iou_0.5": None}
    return {"n": len(values), "mean_iou": round(sum(values) / len(values), 4),
            "hit_rate_iou_0.5": round(sum(v >= 0.5 for v in values) / len(values), 4)}


def edge_offsets(films: list[dict], rows: dict) -> dict:
    """Per lung, the median offset of each predicted edge from the annotated one, as a fraction of the
    annotated box's width / height; positive = the predicted box reaches beyond the annotation there.
    The patient's right lung is on the image's left, so its medial edge is x2."""
    out = {}
    for side in LUNGS:
        medial, lateral = (2, 0) if side == "right lung" else (0, 2)
        sign = {medial: 1 if medial == 2 else -1, lateral: 1 if lateral == 2 else -1, 1: -1, 3: 1}
        edges = {"medial": [], "lateral": [], "top": [], "bottom": [], "width_ratio": [], "height_ratio": []}
        for f in films:
            p, g = rows[f["id"]]["boxes"][side], f["lung_boxes"][side]
            w, h = g[2] - g[0], g[3] - g[1]
            for key, k in (("medial", medial), ("lateral", lateral), ("top", 1), ("bottom", 3)):
                edges[key].append(sign[k] * (p[k] - g[k]) / (w if k in (0, 2) else h))
            edges["width_ratio"].append((p[2] - p[0]) / w)
            edges["height_ratio"].append((p[3] - p[1]) / h)
        out[side] = {k: round(median(v), 3) for k, v in edges.items()}
    return out


def fit_calibration(films: list[dict], rows: dict) -> dict[str, list[float]]:
    """Per lung, the median edge shifts (fractions of the *predicted* box, as ``box_calibration`` applies
    them) that would move each film's predicted box onto its annotated one."""
    out = {}
    for side in LUNGS:
        shifts = [[], [], [], []]
        for f in films:
            p, g = rows[f["id"]]["boxes"][side], f["lung_boxes"][side]
            w, h = p[2] - p[0], p[3] - p[1]
            for k, size in enumerate((w, h, w, h)):
                shifts[k].append((g[k] - p[k]) / size)
        out[side] = [round(median(s), 4) for s in shifts]
    return out


def breakdown(films: list[dict], rows: dict) -> dict:
    groups: dict[str, list[dict]] = {}
    for f in films:
        r = rows[f["id"]]
        h, w = r["size"]
        keys = [f"view {f['view']}",
                "annotation leaves the image" if any(b[2] > w + 2 or b[3] > h + 2 or min(b) < -2
                                                   for b in f["lung_boxes"].values()) else "annotation inside the image",
                f"uniform border >= {BORDER_PX} px" if r["border_px"] >= BORDER_PX else f"border < {BORDER_PX} px",
                "washed out (p1-p99 < .7)" if r["contrast_range"] < WASHED_OUT_RANGE else "full contrast (p1-p99 >= .7)"]
        for k in keys:
            groups.setdefault(k, []).append(f)
    return {k: summary(lung_ious(v, rows)) for k, v in sorted(groups.items())}


def synth_metrics(films: list[dict], rows: dict) -> dict:
    from bench_rrg import average_precision

    from crrg.observations import ANATOMICAL_REGIONS

    per_region = {}
    for name in ANATOMICAL_REGIONS:
        ious, scored = [], []
        for f in films:
            if name in f["regions"]:
                v = iou(rows[f["id"]]["boxes"][name], f["regions"][name])
                ious.append(v)
                scored.append((rows[f["id"]]["scores"][name], v >= 0.5))
        per_region[name] = {"ap50": average_precision(scored, len(ious)), "mean_iou": sum(ious) / len(ious) if ious else None}
    valid = [v for v in per_region.values() if v["mean_iou"] is not None]
    return {"n": len(films), "map50": round(sum(v["ap50"] for v in valid) / len(valid), 4),
            "mean_iou": round(sum(v["mean_iou"] for v in valid) / len(valid), 4),
            "lungs_mean_iou": round(sum(per_region[s]["mean_iou"] for s in LUNGS) / 2, 4), "per_region": per_region}


def score_version(films: list[dict], synth: list[dict], rows: dict) -> dict:
    dev = [f for f in films if f["half"] == "dev"]
    test = [f for f in films if f["half"] == "test"]
    res = {"all": summary(lung_ious(films, rows)), "dev": summary(lung_ious(dev, rows)),
           "test": summary(lung_ious(test, rows)),
           "per_lung": {s: summary([iou(rows[f["id"]]["boxes"][s], f["lung_boxes"][s]) for f in films]) for s in LUNGS},
           "edge_offsets_all": edge_offsets(films, rows), "breakdown_all": breakdown(films, rows)}
    lat = [rows[f["id"]]["detect_s"] for f in films]
    res["detect_s"] = {"p50": round(median(lat), 4), "p95": round(percentile(lat, 0.95), 4)}
    if synth:
        res["synthetic_test"] = synth_metrics(synth, rows)
    return res


def table(results: dict, films: list[dict]) -> str:
    names = list(results)
    rows: list[list] = []

    def row(label, get):
        vals = []
        for n in names:
            try:
                v = get(results[n])
            except (KeyError, TypeError):
                v = None
            vals.append("—" if v is None else v)
        rows.append([label, *vals])

    n_dev = sum(f["half"] == "dev" for f in films)
    for half, n in (("test", len(films) - n_dev), ("dev", n_dev), ("all", len(films))):
        row(f"{half} ({n} films) mean IoU", lambda r, h=half: r[h]["mean_iou"])
        row(f"{half} hit rate IoU >= .5", lambda r, h=half: r[h]["hit_rate_iou_0.5"])
    for s in LUNGS:
        row(f"all: {s} mean IoU", lambda r, s=s: r["per_lung"][s]["mean_iou"])
    for s in LUNGS:
        for k in ("medial", "lateral", "top", "bottom", "width_ratio", "height_ratio"):
            row(f"all: {s} {k} offset" if "ratio" not in k else f"all: {s} {k}",
                lambda r, s=s, k=k: r["edge_offsets_all"][s][k])
    keys = sorted({k for r in results.values() for k in r["breakdown_all"]})
    for k in keys:
        row(f"all: {k} (n boxes) mean IoU",
            lambda r, k=k: f"{r['breakdown_all'][k]['mean_iou']:.3f} ({r['breakdown_all'][k]['n']})")
    row("synthetic test: films", lambda r: r["synthetic_test"]["n"])
    row("synthetic test: mAP@.5 (29 regions)", lambda r: r["synthetic_test"]["map50"])
    row("synthetic test: mean IoU (29 regions)", lambda r: r["synthetic_test"]["mean_iou"])
    row("synthetic test: lungs mean IoU", lambda r: r["synthetic_test"]["lungs_mean_iou"])
    row("detect() per film p50 / p95 (s)", lambda r: f"{r['detect_s']['p50']:.3f} / {r['detect_s']['p95']:.3f}")
    return print_table("detector lung boxes on the COVID films (IoU against the set's lung boxes)", ["measurement", *names], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="crrg-default", help="this checkout's model (version 'after')")
    parser.add_argument("--also", action="append", default=[], help="NAME=MODEL: another model under this checkout")
    parser.add_argument("--baseline-src", default="/work/baseline/src")
    parser.add_argument("--baseline-model", default="crrg-default")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--synth", default=None, help="a synthetic manifest.jsonl: detection scores on its --synth-split")
    parser.add_argument("--synth-split", default="test")
    parser.add_argument("--fit-calibration", default=None, metavar="NAME",
                        help="print the dev half's per-lung box_calibration under version NAME")
    parser.add_argument("--rows", default=None, help="keep the per-film rows in this folder")
    parser.add_argument("--name", default="real_boxes")
    add_worker_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    started = time.perf_counter()
    films = boxed_films(Path(args.shared))
    synth = synth_films(Path(args.synth) if args.synth else None, args.synth_split)
    items = [{"id": f["id"], "path": f["path"], "lung_boxes": f["lung_boxes"]} for f in films]
    items += [{"id": s["id"], "path": s["path"]} for s in synth]
    versions = {} if args.no_baseline else {"before": (Path(args.baseline_src), args.baseline_model)}
    versions["after"] = (REPO / "src", args.model)
    for spec in args.also:
        name, _, model = spec.partition("=")
        versions[name] = (REPO / "src", model)
    folder = Path(args.rows) if args.rows else Path(tempfile.mkdtemp(prefix="real_boxes_"))
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, (src, model) in versions.items():
        rows = run_version(src, model, items, folder, name)
        results[name] = score_version(films, synth, rows)
        if name == args.fit_calibration:
            fit = fit_calibration([f for f in films if f["half"] == "dev"], rows)
            results[name]["calibration_fitted_on_dev"] = fit
            print("box_calibration fitted on the dev half:", json.dumps(fit))
    text = table(results, films)
    text += (f"\n\nSplit: {len(films)} films, by patient (source + age + sex, seed {SPLIT_SEED}): "
             f"{sum(f['half'] == 'dev' for f in films)} dev, {sum(f['half'] == 'test' for f in films)} test. "
             "Edge offsets: median over films of (predicted - annotated) edge / annotated width or height, "
             "positive = the prediction reaches beyond the annotation.\n")
    save_results(args.name, {"versions": {n: {"src": str(s), "model": m} for n, (s, m) in versions.items()},
                             "synth": args.synth, "total_wall_s": round(time.perf_counter() - started, 1),
                             "load_1min": os.getloadavg()[0], "results": results}, text)


if __name__ == "__main__":
    main()
