"""crrg-default before and after a change to the generation code: the same reports, and latency.

Decodes every study of a manifest once (with the current tree, so both sides get the same pixels),
then runs each code version in its own subprocess (``PYTHONPATH`` = that version's ``src``), one
torch thread, the same studies in the same order: the reference with ``load_pretrained`` +
``generate_report``, the current tree with ``crrg.generation.load_generator``. The rounds alternate
(reference, current, reference, current, ...) so a load change on the machine hits both sides.
Prints a table and writes ``benchmarks/results/generation_regression.{md,json}``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_generation_regression.py \\
        --manifest /work/data/synth_reg/manifest.jsonl --reference /work/baseline/src

Exit status 1 when any report text differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median, percentile, print_table, save_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time
import numpy as np
import torch
torch.set_num_threads(1)
mode, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
from crrg.reporting import StudyInput
arrays = np.load(data, allow_pickle=False)
meta = json.loads(str(arrays["meta"]))
if mode == "current":
    from crrg.generation import load_generator
    engine = load_generator(None, device="cpu")
    run = engine.generate
else:
    from crrg.models.registry import load_pretrained
    model = load_pretrained("crrg-default")
    run = model.generate_report
rows = []
for k, study in enumerate(meta):
    images = [arrays[f"s{k}_{i}"] for i in range(len(study["views"]))]
    t0 = time.perf_counter()
    report = run(StudyInput(images=images, views=study["views"], id=study["id"]))
    rows.append({"id": study["id"], "report": report.report, "findings": report.findings,
                 "impression": report.impression, "seconds": time.perf_counter() - t0})
json.dump(rows, open(out, "w"))
"""


def decode_studies(manifest: Path, limit: int | None, folder: Path) -> Path:
    import numpy as np

    from crrg.image import load_image
    from crrg.records import read_manifest

    records = read_manifest(manifest)[:limit] if limit else read_manifest(manifest)
    arrays, meta = {}, []
    for k, r in enumerate(records):
        meta.append({"id": r.id, "views": [im.view for im in r.images]})
        for i, im in enumerate(r.images):
            arrays[f"s{k}_{i}"] = load_image(im.path)
    path = folder / "studies.npz"
    np.savez(path, meta=json.dumps(meta), **arrays)
    return path


def run_side(mode: str, src: Path, data: Path, out: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", WORKER, mode, str(data), str(out)], env=env, check=True,
                   stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path("/work/data/synth_reg/manifest.jsonl"))
    parser.add_argument("--reference", type=Path, default=Path("/work/baseline/src"),
                        help="the previous version's src folder (a checkout or git archive)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per side")
    parser.add_argument("--name", default="generation_regression")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = decode_studies(args.manifest, args.limit, tmp_path)
        runs: dict[str, list[list[dict]]] = {"reference": [], "current": []}
        for r in range(args.rounds):
            for side, src in (("reference", args.reference), ("current", ROOT / "src")):
                start = time.perf_counter()
                runs[side].append(run_side(side, src, data, tmp_path / f"{side}{r}.json"))
                print(f"round {r + 1}: {side} done in {time.perf_counter() - start:.0f} s", file=sys.stderr)

    ref, cur = runs["reference"][0], runs["current"][0]
    differ = [a["id"] for a, b in zip(ref, cur) if a["report"] != b["report"]]
    rows = []
    for side in ("reference", "current"):
        # the first study of each run also pays for lazy imports and caches: left out of the latency
        secs = [row["seconds"] for run in runs[side] for row in run[1:]]
        rows.append([side, len(runs[side][0]), median(secs), percentile(secs, 0.95), sum(secs) / len(secs)])
    header = ["code", "studies", "p50 s", "p95 s", "mean s"]
    title = (f"crrg-default reports, reference ({args.reference}) vs current tree: "
             f"{len(ref) - len(differ)}/{len(ref)} identical")
    table = print_table(title, header, rows)
    if differ:
        print(f"differing studies: {differ[:10]}")
    save_results(args.name, {"manifest": str(args.manifest), "reference": str(args.reference), "studies": len(ref),
                             "identical": len(ref) - len(differ), "differing": differ,
                             "latency": {r[0]: {"p50_s": r[2], "p95_s": r[3], "mean_s": r[4]} for r in rows},
                             "threads": 1, "rounds": args.rounds}, table)
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
