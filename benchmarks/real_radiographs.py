"""Real radiographs: crrg on real films beside the previous version, in one run (issue 20, item 1).

    python benchmarks/real_radiographs.py --model crrg-default [--baseline-model PATH] [--limit N]

Every film in ``../shared/data`` (never copied into the repository) goes through each version's
``generate_report`` in its own subprocess: this checkout's code, and the previous version's code
(``--baseline-src``, default ``/work/baseline/src``, put first on PYTHONPATH) with its own bundled
model unless ``--baseline-model`` names another. The same metric code (this checkout's) scores both:

* **NIH ChestX-ray14** (``nih1000_64px``, 800 films, 64 px; labels from ``labels14.csv``): AUC per
  CheXpert observation on ``valid/`` (200 films, the test split; all other films of ``valid/`` are
  the negatives), with the NIH -> CheXpert mapping :data:`NIH_TO_CHEXPERT`; Emphysema, Fibrosis and
  Hernia have no CheXpert observation (they still make a film abnormal). Normal vs abnormal: "No
  Finding" vs any label, scored by the candidate of :data:`ABNORMAL_SCORES` with the higher AUC on
  ``train/`` (600 films), never chosen on ``valid/``.
* **NIH reports**: the written reports of the ``valid/`` films, labelled by crrg's labeler, against
  the films' labels (NIH text-mined them from the radiologists' reports): CE micro-5, example-14 and
  macro-14 F1, beside the shuffled-report baseline in label space and an always-normal report.
* **COVID-19 collection** (``covid_cxr``, 653 films): the detector's "right lung" / "left lung"
  boxes (crrg's regions are the patient's sides, as are the set's: patient's right = image left)
  against the 155 films with lung boxes (mean IoU, hit rate at IoU >= 0.5); pneumonia (every
  finding but "No Finding" and "todo") vs "No Finding" AUC, scored by the :data:`OPACITY_SCORES`
  candidate with the higher AUC on NIH ``train/`` for Infiltration/Consolidation/Pneumonia vs normal.
* **IU X-Ray** (the 5 studies of ``iu_xray_image_samples``, reports read with crrg's IU reader):
  BLEU-1/4, ROUGE-L, CIDEr and CE against the real reports, beside two shuffled-report baselines
  (each study given another of the 5 studies' reports, all 4 shifts averaged; 20 random reports of
  the other 3,950 IU studies each, averaged).
* **Self-contradicting reports** (:mod:`crrg.rrg.contradictions`) over every real film's report.
* **Latency** (p50 / p95 of ``generate_report``) and **peak RSS** on real films vs synthetic studies
  (``examples/`` and ``--synth`` test studies), synthetic first, in the same process.
* **OOD score** (this checkout only, :mod:`crrg.ood`): AUROC of the score for synthetic test films vs
  each real set, and the share of films flagged unreliable.

Writes ``benchmarks/results/real_radiographs.md`` and ``.json`` (``--name`` to change).
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

from common import add_worker_arguments, worker_command  # noqa: E402

NIH_TO_CHEXPERT = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
                   "Edema": "Edema", "Effusion": "Pleural Effusion", "Infiltration": "Lung Opacity",
                   "Mass": "Lung Lesion", "Nodule": "Lung Lesion", "Pneumonia": "Pneumonia",
                   "Pneumothorax": "Pneumothorax", "Pleural_Thickening": "Pleural Other"}
PATHOLOGIES = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
               "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture")
ABNORMAL_SCORES = {"1 - P(No Finding)": lambda p: 1 - p.get("No Finding", 0.0),
                   "max P(pathology)": lambda p: max(p.get(n, 0.0) for n in PATHOLOGIES)}
OPACITY_SCORES = {"max P(opacity, consolidation, pneumonia)":
                  lambda p: max(p.get(n, 0.0) for n in ("Lung Opacity", "Consolidation", "Pneumonia")),
                  **ABNORMAL_SCORES}
LUNGS = ("right lung", "left lung")


# ----------------------------------------------------------------------------------------- items
def build_items(shared: Path, synth: Path | None, limit: int | None, synth_reports: int) -> list[dict]:
    """Every film or study to run, as plain dicts: id, set, paths, views, report (whether to write one)."""
    import csv

    rng = random.Random(0)

    def take(rows: list[dict]) -> list[dict]:
        if limit:
            rows = rows[:]
            rng.shuffle(rows)
            rows = sorted(rows[:limit], key=lambda r: r["id"])
        return rows

    items = []
    nih = shared / "nih1000_64px"
    with open(nih / "labels14.csv", newline="") as f:
        items += take([{"id": f"nih/{r['path']}", "set": "nih", "split": r["path"].split("/")[0],
                        "paths": [str(nih / r["path"])], "views": ["PA"], "labels": r["finding_labels"].split("|")}
                       for r in csv.DictReader(f)])
    covid = shared / "covid_cxr"
    rows = [json.loads(line) for line in (covid / "metadata.jsonl").read_text().splitlines() if line.strip()]
    items += take([{"id": f"covid/{r['image']}", "set": "covid", "paths": [str(covid / r["image"])],
                    "views": [r.get("view") or "unknown"], "finding": r["finding"],
                    "lung_boxes": {b["name"]: b["box"] for b in r.get("lung_boxes") or []}} for r in rows])
    full = [p for p in sorted((shared / "real_cxr_samples").iterdir()) if p.suffix in (".png", ".dcm")]
    full += sorted((shared / "vindr_cxr_samples").glob("*.png"))
    items += take([{"id": f"fullsize/{p.name}", "set": "fullsize", "paths": [str(p)], "views": ["PA"]} for p in full])
    items += iu_studies(shared)
    examples = REPO / "examples" / "manifest.jsonl"
    synth_rows = _manifest_items(examples, None, "synth-examples") if examples.is_file() else []
    if synth is not None:
        synth_rows += _manifest_items(synth, "test", "synth-test")
    for i, item in enumerate(synth_rows):
        item["report"] = i < synth_reports
    items += synth_rows
    for item in items:
        item.setdefault("report", True)
    return items


def _priority(item: dict) -> int:
    """NIH valid/ (the test split), COVID films with lung boxes, NIH train/ (choosing the scores), the rest."""
    if item["set"] == "nih":
        return 0 if item["split"] == "valid" else 2
    if item["set"] == "covid":
        return 1 if item["lung_boxes"] else 3
    return 4


def _manifest_items(manifest: Path, split: str | None, name: str) -> list[dict]:
    from crrg.records import read_manifest

    return [{"id": f"{name}/{r.id}", "set": "synth", "paths": [im.path for im in r.images],
             "views": [im.view for im in r.images]} for r in read_manifest(manifest, split=split)]


def iu_studies(shared: Path) -> list[dict]:
    """The IU studies with images in the samples folder (either naming layout: Open-i
    ``CXR25_IM-1024-2001.png`` or Kaggle ``CXR1000_IM-0003-1001.kaggle_normalized.png``), views from the
    DICOM metadata, with their real reports."""
    from crrg.data.iu_xray import IuXrayReader

    folder = shared / "iu_xray_image_samples"
    files = {p.name.split(".")[0]: p for p in sorted(folder.glob("*.png"))}
    reader = IuXrayReader(shared / "iu_xray_reports" / "NLMCXR_reports.tgz",
                          metadata=shared / "iu_xray_reports" / "nlmcxr_dicom_metadata.csv.gz")
    out = []
    for r in reader:
        images = [(files[Path(im.path).name.split(".")[0]], im.view) for im in r.images
                  if Path(im.path).name.split(".")[0] in files]
        if images:
            out.append({"id": f"iu/{r.id}", "set": "iu", "paths": [str(p) for p, _ in images],
                        "views": [v for _, v in images], "reference": r.report})
    return out


def iu_report_pool(shared: Path) -> dict[str, str]:
    from crrg.data.iu_xray import IuXrayReader

    return {r.id: r.report for r in IuXrayReader(shared / "iu_xray_reports" / "NLMCXR_reports.tgz") if r.report}


# ---------------------------------------------------------------------------------------- worker
def worker(args: argparse.Namespace) -> None:
    """Runs under either version's code: only APIs both versions have."""
    import resource

    import torch

    from crrg.errors import CrrgError
    from crrg.image import load_image
    from crrg.models.registry import load_pretrained
    from crrg.reporting import StudyInput

    torch.set_num_threads(args.threads)
    items = json.loads(Path(args.items).read_text())
    t0 = time.perf_counter()
    model = load_pretrained(args.model)
    load_s = time.perf_counter() - t0
    scorer = _ood_scorer(model, args.model, args.ood_stats)
    out = open(args.out, "w")
    peak_synth, warm = None, False
    ordered = sorted(items, key=lambda it: it["set"] != "synth")  # synthetic first: its peak RSS apart
    for item in ordered:
        if item["set"] != "synth" and peak_synth is None:
            peak_synth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row = {"id": item["id"], "set": item["set"]}
        try:
            t = time.perf_counter()
            images = [load_image(p) for p in item["paths"]]
            row["load_s"] = time.perf_counter() - t
            views = [_view(v) for v in item["views"]]
            row["size"] = list(images[0].shape)
            if item["report"] == "analysis":  # finding probabilities and boxes only: one token decoded
                report = model.generate_report(StudyInput(images=images, views=views), max_new_tokens=1)
                row.update(probabilities=report.probabilities,
                           boxes={r.name: r.box for r in report.regions if r.name in LUNGS})
            elif item["report"]:
                if not warm:
                    model.generate_report(StudyInput(images=images, views=views))  # warm-up
                    warm = True
                t = time.perf_counter()
                report = model.generate_report(StudyInput(images=images, views=views, id=item["id"]))
                row["latency_s"] = time.perf_counter() - t
                row.update(findings=report.findings, impression=report.impression,
                           probabilities=report.probabilities,
                           boxes={r.name: r.box for r in report.regions if r.name in LUNGS})
                row["ood"] = getattr(report, "ood", None)
            if row.get("ood") is None and scorer is not None:
                frontal = next((i for i, v in enumerate(views) if v in ("PA", "AP")), 0)
                row["ood"] = scorer.assess(images[frontal]).to_dict()
        except CrrgError as err:
            row["error"] = f"{type(err).__name__}: {err}"
        out.write(json.dumps(row) + "\n")
        out.flush()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write(json.dumps({"_summary": {"load_s": load_s, "peak_rss_mb_synth": peak_synth or peak,
                                       "peak_rss_mb": peak, "threads": args.threads}}) + "\n")
    out.close()


def _view(value: str) -> str:
    from crrg.observations import normalise_view

    return normalise_view(value)


def _ood_scorer(model, name: str, stats_folder: str | None):
    try:
        from crrg.ood import OODScorer
        from crrg.models.registry import bundled_models_dir
    except ImportError:  # the previous version has no OOD score
        return None
    folder = Path(stats_folder) if stats_folder else (Path(name) if Path(name).is_dir() else bundled_models_dir() / name)
    return OODScorer.for_model(model, folder)


def start_worker(src: Path, model: str, items_file: Path, out: Path, threads: int,
                 ood_stats: str | None) -> subprocess.Popen:
    cmd, env = worker_command(__file__, src, model, items_file, out, threads)
    cmd += ["--threads", str(threads)]
    if ood_stats:
        cmd += ["--ood-stats", ood_stats]
    return subprocess.Popen(cmd, env=env)


def finish(proc: subprocess.Popen, started: float) -> float:
    if proc.wait() != 0:
        raise SystemExit(f"a worker failed (exit {proc.returncode}): {' '.join(proc.args)}")
    return time.perf_counter() - started


# --------------------------------------------------------------------------------------- metrics
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="crrg-default")
    parser.add_argument("--baseline-model", default=None, help="default: the previous version's --model")
    parser.add_argument("--baseline-src", default="/work/baseline/src")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--synth", default=None, help="a synthetic manifest.jsonl whose test split is the synthetic set")
    parser.add_argument("--synth-reports", type=int, default=40, help="synthetic studies given a report (the rest: OOD only)")
    parser.add_argument("--limit", type=int, default=None, help="at most N films per real set (quick runs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ood-stats", default=None, help="folder with ood.safetensors (default: the model folder)")
    parser.add_argument("--parallel", action="store_true",
                        help="run both versions side by side (half the wall time on 2 free cores; each one's "
                             "latency then includes the other's load)")
    parser.add_argument("--sets", default=None, help="only these sets, comma-separated: nih,covid,fullsize,iu,synth")
    parser.add_argument("--rows", default=None, help="keep the per-film rows of each version in this folder")
    parser.add_argument("--rescore", action="store_true",
                        help="score the rows in --rows again (no generation); --rows may name several folders, "
                             "whose rows are merged (a film's full report wins over an --analysis-only row)")
    parser.add_argument("--analysis-only", action="store_true",
                        help="real films: finding probabilities and boxes only (one token decoded), for the AUCs "
                             "and IoUs of a full set in a fraction of the time; no reports, latency or contradictions")
    parser.add_argument("--report-sets", default=None,
                        help="full reports only for these real sets (comma-separated; nih-valid names NIH valid/); "
                             "the other real films analysis-only as with --analysis-only")
    parser.add_argument("--priority", action="store_true", help="run NIH valid/ and the boxed COVID films first")
    parser.add_argument("--skip-done", default=None, help="leave out the films this rows folder has for every version")
    parser.add_argument("--name", default="real_radiographs")
    add_worker_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from real_radiographs_metrics import summarise, table

    started = time.perf_counter()
    shared = Path(args.shared)
    runs = {"now": (REPO / "src", args.model)}
    if not args.no_baseline:
        runs = {"before": (Path(args.baseline_src), args.baseline_model or args.model), **runs}
    rows_dirs = [Path(p) for p in args.rows.split(",")] if args.rows else [Path(tempfile.mkdtemp(prefix="real_radiographs."))]
    rows_dir = rows_dirs[0]
    walls: dict[str, float] = {}
    if args.rescore:
        merged: dict[str, dict] = {}
        for folder in rows_dirs:
            for it in json.loads((folder / "items.json").read_text()):
                if it["id"] not in merged or merged[it["id"]]["report"] == "analysis":
                    merged[it["id"]] = it
        items = list(merged.values())
    else:
        items = build_items(shared, Path(args.synth) if args.synth else None, args.limit, args.synth_reports)
        if args.sets:
            items = [it for it in items if it["set"] in args.sets.split(",")]
        if args.analysis_only:
            for it in items:
                it["report"] = "analysis" if it["set"] != "synth" else False
        if args.report_sets:
            wanted = set(args.report_sets.split(","))
            for it in items:
                if it["set"] != "synth" and not {it["set"], f"{it['set']}-{it.get('split')}"} & wanted:
                    it["report"] = "analysis"
        if args.skip_done:  # films a stopped run already did in every version (merge them with --rescore)
            done = [{json.loads(line).get("id") for line in (Path(args.skip_done) / f"{name}.jsonl").read_text().splitlines()
                     if line.strip()} for name in runs]
            items = [it for it in items if not all(it["id"] in d for d in done)]
        if args.priority:  # what the headline numbers need first, so that a stopped run can be scored
            items.sort(key=_priority)
        rows_dir.mkdir(parents=True, exist_ok=True)
        (rows_dir / "items.json").write_text(json.dumps(items))
        procs = {}
        for name, (src, model) in runs.items():  # one after the other, or side by side with --parallel
            procs[name] = (start_worker(src, model, rows_dir / "items.json", rows_dir / f"{name}.jsonl", args.threads,
                                        args.ood_stats), time.perf_counter())
            if not args.parallel:
                walls[name] = finish(*procs[name])
        for name, (proc, t) in procs.items():
            walls[name] = walls.get(name) or finish(proc, t)
    results = {}
    for name in runs:
        by_id: dict[str, dict] = {}
        summary_rows = []
        for folder in rows_dirs:
            path = folder / f"{name}.jsonl"
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
            summary_rows += [r["_summary"] for r in rows if "_summary" in r and "latency_s" not in r]
            for r in rows:
                if "id" in r and ("findings" in r or r["id"] not in by_id):
                    by_id[r["id"]] = r
        results[name] = (by_id, summary_rows[0] if summary_rows else {})
    # a partial run (--rescore of rows a stopped run left) is scored on the films every version reached
    done = set.intersection(*(set(rows) for rows, _ in results.values()))
    if len(done) < len(items):
        print(f"scoring the {len(done)} of {len(items)} films/studies every version reached")
        items = [it for it in items if it["id"] in done]
    summary = {name: summarise(items, rows, extra, shared) for name, (rows, extra) in results.items()}
    for name in summary:
        summary[name]["wall_s"] = round(walls[name], 1) if name in walls else None
    from common import save_results

    text = table(summary, args, len(items), time.perf_counter() - started)
    save_results(args.name, {"model": args.model, "baseline_model": args.baseline_model or args.model,
                             "limit": args.limit, "threads": args.threads, "parallel": args.parallel, "load_1min": os.getloadavg()[0],
                             "total_wall_s": round(time.perf_counter() - started, 1), "results": summary}, text)


if __name__ == "__main__":
    main()
