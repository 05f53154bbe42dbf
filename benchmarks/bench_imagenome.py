"""Time ``crrg data prepare mimic-cxr --imagenome`` on a full-size Chest ImaGenome fixture (wall time, peak RSS).

The fixture comes from ``make_imagenome_fixture.py`` (243,324 silver scene graphs, 227,835 studies;
write it outside the repository). The real CLI runs in a child process, once without and once with
``--imagenome`` (so the scene graphs' own cost is the difference), and its peak resident memory is
read from ``getrusage(RUSAGE_CHILDREN)``; the child's ``notes`` line (regions, unmapped by reason) is
shown. Per-graph latency (median, p95) is timed in-process on a sample. Targets: under 600 s and
under 4 GB.

    python benchmarks/make_imagenome_fixture.py /work/data/imagenome_full
    nice python benchmarks/bench_imagenome.py /work/data/imagenome_full [--runs 1] [--sample 2000]

Results: a table on stdout and ``benchmarks/results/imagenome_prepare.{json,md}``. The page cache is
warm after generating the fixture (the numbers say so).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import median, percentile, print_table, save_results  # noqa: E402

TARGET_S, TARGET_GB = 600.0, 4.0


def run_once(fixture: Path, out: Path, imagenome: bool) -> dict:
    cmd = [sys.executable, "-m", "crrg", "data", "prepare", "mimic-cxr", "--root", str(fixture / "mimic-cxr-jpg"),
           "--out", str(out)]
    if imagenome:
        cmd += ["--imagenome", str(fixture / "chest-imagenome")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = next((line.strip() for line in (proc.stdout + proc.stderr).splitlines()[::-1] if "wrote" in line), "")
    return {"imagenome": imagenome, "wall_s": round(wall, 1),
            "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
            "peak_rss_gb": round(after.ru_maxrss / 1024 ** 2, 3), "summary": summary}


def per_graph_ms(fixture: Path, sample: int) -> dict:
    from crrg.data.imagenome import ImaGenome

    source = ImaGenome(fixture / "chest-imagenome")
    folder = fixture / "chest-imagenome" / "silver_dataset" / "scene_graph"
    names = []
    if folder.is_dir():
        with os.scandir(folder) as entries:
            for entry in entries:
                names.append(entry.name.removesuffix("_SceneGraph.json"))
                if len(names) >= sample:
                    break
    times = []
    for dicom in names:
        t = time.perf_counter()
        source.regions(dicom)
        times.append((time.perf_counter() - t) * 1e3)
    return {"graphs": len(times), "median_ms": round(median(times), 3), "p95_ms": round(percentile(times, 0.95), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture", type=Path)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--sample", type=int, default=2000, help="graphs timed one by one in-process")
    args = parser.parse_args()
    out = args.fixture / "manifest.jsonl"
    runs = []
    for _ in range(args.runs):
        runs.append(run_once(args.fixture, out, imagenome=False))
        runs.append(run_once(args.fixture, out, imagenome=True))
    latency = per_graph_ms(args.fixture, args.sample)
    graphs = sum(1 for _ in os.scandir(args.fixture / "chest-imagenome" / "silver_dataset" / "scene_graph")) \
        if (args.fixture / "chest-imagenome" / "silver_dataset" / "scene_graph").is_dir() else None
    rows = [[("with" if r["imagenome"] else "without") + " --imagenome", r["wall_s"], r["cpu_s"], r["peak_rss_gb"]]
            for r in runs]
    load = os.getloadavg()
    table = print_table(f"crrg data prepare mimic-cxr on {graphs or '?'} scene graphs (page cache warm)",
                        ["run", "wall s", "cpu s", "peak RSS GB"], rows)
    table += (f"\n\nper scene graph (in-process, {latency['graphs']} graphs): median {latency['median_ms']} ms, "
              f"p95 {latency['p95_ms']} ms\n\nCLI summary: {runs[-1]['summary']}\n\ntarget: < {TARGET_S:.0f} s and "
              f"< {TARGET_GB} GB; load average {load[0]:.1f} (other jobs share the 2 cores)")
    print(table.split("\n\n", 1)[1])
    save_results("imagenome_prepare", {"scene_graphs": graphs, "runs": runs, "per_graph": latency,
                                       "target": {"wall_s": TARGET_S, "peak_rss_gb": TARGET_GB},
                                       "loadavg_after": [round(x, 1) for x in load], "page_cache": "warm"}, table)


if __name__ == "__main__":
    main()
