"""Report latency and memory on real films beside synthetic studies, previous code vs this tree (issue 20's
speed target: real p95 <= 1.5 x synthetic p95, real p50 <= 0.6 s, peak RSS <= 1 GB).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_real_latency.py \\
        --synth /work/data/b4_synth/manifest.jsonl [--per-set 10] [--rounds 2]
    nice -n 10 .venv/bin/python benchmarks/bench_real_latency.py --all-real   # every real film, this tree

Latency mode: real frontal films from ``../shared/data`` (NIH ``valid/`` 64 px, COVID, VinDr, the
full-size samples; ``--per-set`` of each, chosen with a fixed seed) and the synthetic studies of
``--synth`` (frontal + lateral) are decoded once with this tree's image loader, so both versions get
the same pixels, then written by ``crrg-default`` in a subprocess per version (``PYTHONPATH`` = that
version's ``src``), one torch thread, real and synthetic studies interleaved, the versions alternating
round by round so that a change of load on the machine hits both. Per version and set: p50 / p95 /
mean seconds of report generation (the first study of a run, which pays for lazy imports, left out),
queries decoded per study (selected regions + IMPRESSION + whole-study sentences: the rows of the
decoder's batch), the peak RSS of the process, failures, and self-contradicting reports
(:func:`crrg.rrg.contradictions.report_contradictions`, this tree's check for both versions). The load
average before and after each run is in the table: the target is stated for an idle machine.

``--all-real``: every real film (NIH train + valid, every COVID film, VinDr, the full-size samples, the IU
samples as their 5 studies) through this tree, one process, counting self-contradicting reports and
failures; a lateral-only film is refused by design (counted apart). Rows stream to ``--rows`` so an
interrupted pass still says how far it got. Results go to ``benchmarks/results/real_latency.{md,json}``
(an ``--all-real`` pass adds its counts to the JSON of the latency run, and the other way round).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, median, percentile, print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CRRG_SHARED", ROOT.parent / "shared")) / "data"
NAME = "real_latency"
HF_SIDE = "current, transformers' search"
NO_TRITON_SIDE = "current, triton not imported (what-if)"

WORKER = r"""
import json, os, resource, sys, time
if os.environ.get("CRRG_BENCH_NO_TRITON"):  # what-if only: torch._dynamo (via torchvision.ops) skips triton
    sys.modules.setdefault("triton", None)
import numpy as np
import torch
torch.set_num_threads(1)
data, out = sys.argv[1], sys.argv[2]
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import_peak = peak_mb()
from crrg.generation import load_generator  # both versions have the one loader (crrg-default of their own tree)
from crrg.reporting import StudyInput
engine = load_generator(None, device="cpu")
loaded_peak = peak_mb()
model, run = engine.model, engine.generate
det = model.detector.cfg
detector = {k: getattr(det, k, None) for k in ("contrast_percentiles", "contrast_boxes_only", "box_votes",
                                               "mirror_regions", "box_calibration")}
if os.environ.get("CRRG_BENCH_TRANSFORMERS_SEARCH"):  # this tree with transformers' own beam search
    model.language.fast_beam_search = False
arrays = np.load(data, allow_pickle=False)
meta = json.loads(str(arrays["meta"]))
rows_decoded = []
generate = model.language.generate
def counting(features, *args, **kwargs):
    rows_decoded.append(int(features.shape[0]))
    return generate(features, *args, **kwargs)
model.language.generate = counting
rows = []
for k, study in enumerate(meta):
    images = [arrays[f"s{k}_{i}"] for i in range(len(study["views"]))]
    row = {"id": study["id"], "set": study["set"]}
    rows_decoded.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        report = run(StudyInput(images=images, views=study["views"], id=study["id"]))
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    else:
        row.update(findings=report.findings, impression=report.impression,
                   selected=sum(bool(r.selected) for r in report.regions))
    row["seconds"] = time.perf_counter() - t0
    row["cpu_seconds"] = time.process_time() - c0  # one thread: about the wall time of an idle machine
    row["queries"] = sum(rows_decoded)
    rows.append(row)
json.dump({"rows": rows, "peak_rss_mb": peak_mb(), "torch_import_rss_mb": import_peak, "loaded_rss_mb": loaded_peak,
           "version": model.crrg_config.get("version"), "detector": detector}, open(out, "w"))
"""


# ------------------------------------------------------------------------------------------ films
def real_films(shared: Path, every: bool = False) -> list[dict]:
    """Real films as one-image studies: id, set, path, view. Without ``every``, frontal films only and
    NIH from ``valid/`` only (the latency sets); with it, every film (the ``--all-real`` pass)."""
    import csv

    films = []
    nih = shared / "nih1000_64px"
    with open(nih / "labels14.csv", newline="") as f:
        films += [{"id": f"nih/{r['path']}", "set": "nih", "paths": [str(nih / r["path"])], "views": ["PA"]}
                  for r in csv.DictReader(f) if every or r["path"].startswith("valid/")]
    covid = shared / "covid_cxr"
    for line in (covid / "metadata.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            # this set writes a lateral film's view "L", which crrg.observations.normalise_view reads as unknown
            view = "LATERAL" if r.get("view") == "L" else r.get("view") or "unknown"
            films.append({"id": f"covid/{r['image']}", "set": "covid", "paths": [str(covid / r["image"])],
                          "views": [view]})
    films += [{"id": f"vindr/{p.name}", "set": "vindr", "paths": [str(p)], "views": ["PA"]}
              for p in sorted((shared / "vindr_cxr_samples").glob("*.png"))]
    films += [{"id": f"fullsize/{p.name}", "set": "fullsize", "paths": [str(p)], "views": ["PA"]}
              for p in sorted((shared / "real_cxr_samples").iterdir()) if p.suffix in (".png", ".dcm")]
    if every:
        films += iu_studies(shared)
    from crrg.observations import normalise_view

    for film in films:
        film["views"] = [normalise_view(v) for v in film["views"]]
    if not every:
        from crrg.observations import frontal_index

        films = [f for f in films if frontal_index(f["views"]) is not None]
    return films


def iu_studies(shared: Path) -> list[dict]:
    """The 5 IU studies of ``iu_xray_image_samples`` (views from the DICOM metadata)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_radiographs import iu_studies as studies

    return [{"id": s["id"], "set": "iu", "paths": s["paths"], "views": s["views"]} for s in studies(shared)]


def synthetic_studies(manifest: Path) -> list[dict]:
    from crrg.records import read_manifest

    return [{"id": f"synth/{r.id}", "set": "synth", "paths": [im.path for im in r.images],
             "views": [im.view for im in r.images]} for r in read_manifest(manifest)]


REAL_SETS = ("nih", "covid", "vindr", "fullsize", "iu")


def latency_items(shared: Path, synth: Path, per_set: int, seed: int, synth_limit: int | None = None,
                  iu: bool = False) -> list[dict]:
    """``per_set`` frontal films of each real set and every synthetic study, interleaved (real, synthetic,
    ...) so that both meet the same load; ``iu``: also the 5 IU studies (films of 2,000-2,500 px, the
    largest here: what a real film costs in memory)."""
    rng = random.Random(seed)
    real = iu_studies(shared) if iu else []
    films = real_films(shared)
    for name in ("nih", "covid", "vindr", "fullsize"):
        group = [f for f in films if f["set"] == name]
        real += sorted(rng.sample(group, min(per_set, len(group))), key=lambda f: f["id"])
    rng.shuffle(real)
    synthetic = synthetic_studies(synth)[:synth_limit]
    items = []
    for i in range(max(len(real), len(synthetic))):
        items += real[i:i + 1] + synthetic[i:i + 1]
    return items


def decode_items(items: list[dict], folder: Path) -> Path:
    import numpy as np

    from crrg.image import load_image

    arrays, meta = {}, []
    for k, item in enumerate(items):
        meta.append({"id": item["id"], "set": item["set"], "views": item["views"]})
        for i, path in enumerate(item["paths"]):
            arrays[f"s{k}_{i}"] = load_image(path)
    path = folder / "studies.npz"
    np.savez(path, meta=json.dumps(meta), **arrays)
    return path


# ------------------------------------------------------------------------------------------ runs
def run_side(src: Path, data: Path, out: Path, transformers_search: bool = False, no_triton: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if transformers_search:
        env["CRRG_BENCH_TRANSFORMERS_SEARCH"] = "1"
    if no_triton:
        env["CRRG_BENCH_NO_TRITON"] = "1"
    subprocess.run([sys.executable, "-c", WORKER, str(data), str(out)], env=env, check=True,
                   stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def contradicting(row: dict) -> list[str]:
    from crrg.rrg.contradictions import report_contradictions

    return report_contradictions(row["findings"], row["impression"]) if "findings" in row else []


def summarise(runs: list[dict]) -> dict:
    """Per set ("real" = every real set together, and each real set alone): latency, queries, failures,
    self-contradicting reports (of the first run: the texts are the same each round)."""
    out: dict = {}
    first = runs[0]["rows"]
    sets = sorted({r["set"] for r in first})
    groups = {"real": [s for s in sets if s != "synth"], "synth": ["synth"], **{s: [s] for s in sets if s != "synth"}}
    for name, members in groups.items():
        # the first study of each run also pays for lazy imports and caches: left out of the latency
        secs = [r["seconds"] for run in runs for r in run["rows"][1:] if r["set"] in members and "error" not in r]
        cpu = [r["cpu_seconds"] for run in runs for r in run["rows"][1:] if r["set"] in members and "error" not in r]
        rows = [r for r in first if r["set"] in members]
        if not rows:
            continue
        out[name] = {"studies": len(rows), "p50_s": median(secs), "p95_s": percentile(secs, 0.95),
                     "cpu_p50_s": median(cpu), "cpu_p95_s": percentile(cpu, 0.95),
                     "mean_s": sum(secs) / len(secs) if secs else float("nan"),
                     "queries_mean": sum(r["queries"] for r in rows) / len(rows),
                     "selected_mean": sum(r.get("selected", 0) for r in rows) / len(rows),
                     "failures": sum("error" in r for r in rows),
                     "contradicting": sum(bool(contradicting(r)) for r in rows)}
    out["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    out["loaded_rss_mb"] = max(run.get("loaded_rss_mb", 0.0) for run in runs)
    out["torch_import_rss_mb"] = max(run.get("torch_import_rss_mb", 0.0) for run in runs)
    return out


def latency(args: argparse.Namespace) -> int:
    items = latency_items(SHARED, args.synth, args.per_set, args.seed, args.synth_limit, args.iu)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = decode_items(items, tmp_path)
        sides = [("previous", args.reference), ("current", ROOT / "src")]
        if args.isolate:  # this tree with transformers' search: what the search alone changes
            sides.insert(1, (HF_SIDE, ROOT / "src"))
        if args.no_triton:
            sides.append((NO_TRITON_SIDE, ROOT / "src"))
        runs: dict[str, list[dict]] = {side: [] for side, _ in sides}
        loads: dict[str, list[float]] = {side: [] for side, _ in sides}
        for r in range(args.rounds):
            for side, src in sides:
                start, load = time.perf_counter(), os.getloadavg()[0]
                runs[side].append(run_side(src, data, tmp_path / f"{r}-{len(runs[side])}-{sides.index((side, src))}.json",
                                           side == HF_SIDE, side == NO_TRITON_SIDE))
                loads[side] += [load, os.getloadavg()[0]]
                print(f"round {r + 1}: {side} done in {time.perf_counter() - start:.0f} s "
                      f"(load {load:.1f} -> {os.getloadavg()[0]:.1f})", file=sys.stderr)
    summary = {side: summarise(rs) for side, rs in runs.items()}
    prev, cur = runs["previous"][0]["rows"], runs["current"][0]["rows"]
    same = {s: [a["id"] for a, b in zip(prev, cur) if a["set"] in s and a.get("findings") == b.get("findings")
                and a.get("impression") == b.get("impression")] for s in (("synth",), REAL_SETS)}
    header = ["code", "set", "studies", "p50 s", "p95 s", "mean s", "CPU p50 s", "CPU p95 s", "queries/study",
              "failures", "contradicting", "RSS after import torch / load MB", "peak RSS MB", "load"]
    rows = []
    for side in runs:
        for name, s in summary[side].items():
            if not isinstance(s, dict) or name not in ("real", "synth") and not args.per_set_rows:
                continue
            rows.append([side, name, s["studies"], s["p50_s"], s["p95_s"], s["mean_s"], s["cpu_p50_s"], s["cpu_p95_s"],
                         round(s["queries_mean"], 1), s["failures"], s["contradicting"],
                         f"{summary[side]['torch_import_rss_mb']:.0f} / {summary[side]['loaded_rss_mb']:.0f}",
                         round(summary[side]["peak_rss_mb"]), f"{min(loads[side]):.1f}-{max(loads[side]):.1f}"])
    ratio = {side: summary[side]["real"]["p95_s"] / summary[side]["synth"]["p95_s"] for side in summary}
    cpu_ratio = {side: summary[side]["real"]["cpu_p95_s"] / summary[side]["synth"]["cpu_p95_s"] for side in summary}
    n_synth = sum(1 for r in cur if r["set"] == "synth")
    if HF_SIDE in runs:  # the search alone must not change a report
        search_same = sum((a.get("findings"), a.get("impression")) == (b.get("findings"), b.get("impression"))
                          for a, b in zip(runs[HF_SIDE][0]["rows"], cur))
        print(f"this tree, transformers' search vs crrg.generation.beam: {search_same}/{len(cur)} reports identical")
    detector = runs["current"][0].get("detector") or {}
    title = (f"crrg-default {runs['current'][0].get('version')} report latency (detector: "
             + ", ".join(f"{k} {v}" for k, v in detector.items() if k != "box_calibration")
             + f"{', box_calibration' if detector.get('box_calibration') else ''}), real films"
             + (" (with the 5 IU studies, 2,000-2,500 px)" if args.iu else "") + " vs synthetic studies, "
             f"previous code ({args.reference}) vs this tree, 1 torch thread, {args.rounds} alternating round(s); "
             "real p95 / synthetic p95: "
             f"previous {ratio['previous']:.2f}, current {ratio['current']:.2f} (CPU time: "
             f"{cpu_ratio['previous']:.2f}, {cpu_ratio['current']:.2f}); synthetic reports identical: "
             f"{len(same[('synth',)])}/{n_synth}; real reports identical: {len(same[REAL_SETS])}"
             f"/{len(cur) - n_synth}"
             + (f"; this tree with transformers' search vs crrg.generation.beam: {search_same}/{len(cur)} identical"
                if HF_SIDE in runs else ""))
    table = print_table(title, header, rows)
    payload = {"synth": str(args.synth), "reference": str(args.reference), "per_set": args.per_set, "detector": detector,
               "rounds": args.rounds, "threads": 1, "summary": summary, "real_over_synth_p95": ratio,
               "real_over_synth_cpu_p95": cpu_ratio,
               "synth_identical": len(same[("synth",)]), "synth_studies": n_synth,
               "real_identical": len(same[REAL_SETS]), "load_average": loads, "iu": args.iu,
               "search_identical": search_same if HF_SIDE in runs else None,
               "differing_synth": [a["id"] for a, b in zip(prev, cur) if a["set"] == "synth"
                                   and (a.get("findings"), a.get("impression")) != (b.get("findings"), b.get("impression"))]}
    save(payload, table, args.save_as or ("latency_isolate" if args.isolate else "latency"))
    return 0


# ------------------------------------------------------------------------------------------ all real
def all_real(args: argparse.Namespace) -> int:
    """Every real film through this tree: self-contradicting reports and failures (streamed to ``--rows``)."""
    import resource

    import torch

    from crrg.errors import CrrgError
    from crrg.generation import load_generator
    from crrg.image import load_image
    from crrg.reporting import StudyInput

    torch.set_num_threads(1)
    films = round_robin(real_films(SHARED, every=True))  # every set early: a pass cut short still covers all
    done = read_rows(args.rows)  # resume an interrupted pass (every shard's rows count)
    shard, shards = args.shard
    mine = [f for k, f in enumerate(films) if k % shards == shard and f["id"] not in done]
    engine = load_generator(None, device="cpu") if mine and not args.summarise else None
    rows_file = args.rows if shards == 1 else args.rows.with_name(f"{args.rows.stem}.{shard}-of-{shards}.jsonl")
    rows_file.parent.mkdir(parents=True, exist_ok=True)
    with open(rows_file, "a") as out:
        for film in mine if engine is not None else []:
            row = {"id": film["id"], "set": film["set"]}
            t0 = time.perf_counter()
            try:
                images = [load_image(p) for p in film["paths"]]
                report = engine.generate(StudyInput(images=images, views=film["views"], id=film["id"]))
                row.update(findings=report.findings, impression=report.impression)
            except CrrgError as exc:
                row["refused" if "lateral" in str(exc) else "error"] = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a crash is a failure to count, not the end of the pass
                row["error"] = f"{type(exc).__name__}: {exc}"
            row["seconds"] = time.perf_counter() - t0
            row["contradictions"] = contradicting(row)
            done[film["id"]] = row
            out.write(json.dumps(row) + "\n")
            out.flush()
    done.update(read_rows(args.rows))  # what the other shards wrote meanwhile
    rows = [done[f["id"]] for f in films if f["id"] in done]
    by_set: dict = {}
    for r in rows:
        s = by_set.setdefault(r["set"], {"films": 0, "reports": 0, "contradicting": 0, "failures": 0, "refused": 0})
        s["films"] += 1
        s["reports"] += "findings" in r
        s["contradicting"] += bool(r["contradictions"])
        s["failures"] += "error" in r
        s["refused"] += "refused" in r
    secs = [r["seconds"] for r in rows if "findings" in r]
    total = {k: sum(s[k] for s in by_set.values()) for k in ("films", "reports", "contradicting", "failures", "refused")}
    payload = {"films_total": len(films), **total, "by_set": by_set,
               "p50_s": median(secs), "p95_s": percentile(secs, 0.95),
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if engine is not None else None,
               "examples": [{"id": r["id"], "contradictions": r["contradictions"][:2]} for r in rows if r["contradictions"]][:10],
               "errors": [{"id": r["id"], "error": r["error"]} for r in rows if "error" in r][:10]}
    header = ["set", "films", "reports", "contradicting", "failures", "refused (lateral only)"]
    table_rows = [[name, s["films"], s["reports"], s["contradicting"], s["failures"], s["refused"]]
                  for name, s in sorted(by_set.items())]
    table_rows.append(["all", total["films"], total["reports"], total["contradicting"], total["failures"],
                       total["refused"]])
    table = print_table(f"Every real film through this tree's crrg-default ({len(rows)}/{len(films)} done): "
                        f"self-contradicting reports and failures", header, table_rows)
    save(payload, table, "all_real")
    return 0


NOTES = """
Reading the tables: "p50 s / p95 s" are wall seconds per report on this shared machine (its load average is
in the last column: 2 cores, so a load above 2 means a report's process did not have a core to itself);
"CPU p50 s / CPU p95 s" are the process's CPU seconds per report with one torch thread, the closest
stand-in for an idle machine's wall time. "queries/study": rows of the decoder's batch (selected regions +
IMPRESSION + whole-study sentences). "contradicting": reports with a self-contradiction by this tree's
check (crrg.rrg.contradictions; the previous code's reports are checked with this
tree's labeler). Each version runs in its own process; "RSS after import torch / load" is that process's
peak RSS after `import torch` and after load_generator (model, children, tokenizers; the sentence embedder
is loaded on the first report), "peak RSS" its ru_maxrss at the end (model, every report, the studies'
pixels one at a time).

Reports: against /work/baseline (8ce67c6) the real films' reports differ where the lead's b0c87de (every real
film's findings read by classifier_real, chosen by the synthetic-vs-real discriminant) and ea3813a (a
negation covered by a wider one is dropped) change them; "latency_vs_head_before_S" runs this tree against
the code just before the detector change (9fac014, exported to /work/runs/S/head/src) and every report is
the same.

Where the memory goes (this tree, measured with /proc/self/smaps and VmHWM): `import torch` of the CUDA 13
wheel installed here is ~507 MB by itself (258 MB of it private heap, the rest cuBLASLt, nvJitLink, nvrtc
and libtorch pages); torchvision adds ~164 MB because torchvision.ops.roi_align imports torch._dynamo,
which imports sympy (~34 MB) and triton (~75 MB); transformers' GPT-2 adds ~62 MB (its modeling_utils
imports scipy.optimize, accelerate and kernels); timm ~21 MB (the real-film classifier). The weights are
~95 MB (rrg 12 M parameters, the two classifiers 12 M, fp32) plus ~45 MB of the sentence embedder's
memory-mapped safetensors touched on the first report. What grew per study was the detector's full-size
copies of a film (three channels, stretched, mirrored, normalised, and torch's channels-last copy inside
the resize: +241 MB on a 2496 x 2048 IU film, +45 MB on a 1024 px one): the detector now builds each look
from the one gray plane with one channels-last buffer (crrg.rrg.detector.RegionDetector._look), bit for
bit the same input. "triton not imported (what-if)" is this tree in a process where `import triton` fails
(it is used only to compile GPU kernels): not what crrg does, the measure of what a CPU-only install
without triton (or the CPU wheel of torch) would save. glibc settings were measured too (36 real films, this
tree, CPU seconds of the reports): malloc_trim after each report lowers the RSS between reports by ~30 MB
but not the peak; a fixed 1 MB mmap threshold lowers the peak by ~25 MB for +15 % CPU, MALLOC_TRIM_THRESHOLD_=0
by ~50 MB for +50 % CPU (every large tensor is then a fresh mapping), a 32 MB mmap threshold with it by
~15 MB for +9 %; MALLOC_ARENA_MAX changes nothing (one thread); so none is used. Running the three detector looks as one batch would save ~8 % of the detector's time but
rounds the convolutions differently (boxes move by ~1e-4 px), so the looks stay separate forwards.
"""


def round_robin(films: list[dict]) -> list[dict]:
    """One film of each set in turn (the small sets run out first)."""
    groups: dict[str, list[dict]] = {}
    for film in films:
        groups.setdefault(film["set"], []).append(film)
    out = []
    for i in range(max(len(g) for g in groups.values())):
        out += [g[i] for g in groups.values() if i < len(g)]
    return out


def read_rows(rows: Path) -> dict[str, dict]:
    """The rows of ``rows`` and of its shards' files (``<stem>.K-of-N.jsonl`` beside it), by film id."""
    done = {}
    for path in [rows, *sorted(rows.parent.glob(f"{rows.stem}.*-of-*.jsonl"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    done[row["id"]] = row
    return done


def save(payload: dict, table: str, key: str) -> None:
    """Writes this mode's part of ``real_latency.{json,md}``, keeping the other mode's part."""
    from crrg.io import atomic_write_json, atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{NAME}.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    old[key] = {"machine": machine(), **payload}
    old.setdefault("tables", {})[key] = table
    atomic_write_json(path, old)
    text = f"Machine: {machine()}\n"
    for part in sorted(old.get("tables", {}), key=lambda k: (k != "latency", k == "all_real", k)):
        text += "\n" + old["tables"][part] + "\n"
    atomic_write_text(RESULTS / f"{NAME}.md", text + NOTES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth", type=Path, default=Path("/work/data/b4_synth/manifest.jsonl"),
                        help="manifest of the synthetic studies (crrg synth generate --views frontal,lateral)")
    parser.add_argument("--reference", type=Path, default=Path("/work/baseline/src"),
                        help="the previous version's src folder")
    parser.add_argument("--per-set", type=int, default=10, help="frontal films of each real set (latency mode)")
    parser.add_argument("--synth-limit", type=int, default=None, help="first N synthetic studies only")
    parser.add_argument("--per-set-rows", action="store_true", help="also a table row per real set")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per version")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--isolate", action="store_true",
                        help="also this tree with transformers' own beam search (what the search alone changes)")
    parser.add_argument("--no-triton", action="store_true",
                        help="also this tree in a process where `import triton` fails (what-if: the memory triton costs)")
    parser.add_argument("--iu", action="store_true",
                        help="also the 5 IU studies (2,000-2,500 px films): the peak RSS of the largest real films")
    parser.add_argument("--save-as", default=None, metavar="KEY",
                        help="the key of this run in real_latency.json/.md (default: latency)")
    parser.add_argument("--all-real", action="store_true", help="every real film through this tree (see above)")
    parser.add_argument("--shard", type=lambda v: tuple(int(x) for x in v.split("/")), default=(0, 1),
                        metavar="K/N", help="--all-real: this process writes films K, K+N, K+2N, ... (K from 0)")
    parser.add_argument("--summarise", action="store_true", help="--all-real: only the table of the rows so far")
    parser.add_argument("--rows", type=Path, default=Path("/work/runs/b4/all_real_rows.jsonl"),
                        help="--all-real: where rows stream (and an interrupted pass resumes from)")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"no shared data at {SHARED} (set CRRG_SHARED to the folder holding data/)")
    return all_real(args) if args.all_real else latency(args)


if __name__ == "__main__":
    raise SystemExit(main())
