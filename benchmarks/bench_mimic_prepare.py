"""Time ``crrg data prepare mimic-cxr`` on a full-size MIMIC-CXR fixture (wall time and peak RSS).

Generates the fixture with ``make_mimic_fixture.py`` when FIXTURE_DIR lacks it (about 5 minutes and
~1 GB of disk for 227,835 report files), then runs the real CLI in a child process and reads its
peak resident memory from ``getrusage(RUSAGE_CHILDREN)``. Targets: under 180 s and under 3 GB.

    nice python benchmarks/bench_mimic_prepare.py /tmp/mimic_full [--runs 1]

Results: a table on stdout and ``benchmarks/results/mimic_prepare.json``. The page cache is warm
after fixture generation or a previous run (the numbers say so); on a cold cache the file reads
depend on the disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_mimic_fixture import make_fixture  # noqa: E402

from crrg.io import atomic_write_json  # noqa: E402

STUDIES, IMAGES = 227_835, 377_110
TARGET_S, TARGET_GB = 180.0, 3.0


def run_once(root: Path, out: Path) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "crrg", "--quiet", "data", "prepare", "mimic-cxr", "--root", str(root), "--out", str(out)]
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(wall, 1),
            "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
            "peak_rss_gb": round(after.ru_maxrss / 1024 ** 2, 3)}  # ru_maxrss is in KiB on Linux


def report_chars(root: Path, sample: int = 2000) -> dict[str, float]:
    """Length in characters of the first ``sample`` report files, to show the fixture is realistic."""
    sizes = []
    for path in (root / "files").rglob("s*.txt"):
        sizes.append(len(path.read_text(encoding="utf-8")))
        if len(sizes) >= sample:
            break
    sizes.sort()
    return {"sampled": len(sizes), "min": sizes[0], "mean": round(sum(sizes) / len(sizes)), "max": sizes[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture_dir", type=Path)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    root = args.fixture_dir / "jpg"
    if not (root / "mimic-cxr-2.0.0-split.csv.gz").is_file():
        print(f"generating the full-size fixture in {root} ...", flush=True)
        make_fixture(root, STUDIES, IMAGES)
    out = args.fixture_dir / "manifest.jsonl"
    runs = [run_once(root, out) for _ in range(args.runs)]
    lines = sum(1 for _ in open(out, encoding="utf-8")) - 1
    load = os.getloadavg()
    result = {
        "benchmark": "crrg data prepare mimic-cxr, full-size synthetic fixture",
        "studies": STUDIES, "image_rows": IMAGES, "records_written": lines,
        "manifest_mb": round(out.stat().st_size / 1e6, 1),
        "report_chars": report_chars(root),
        "runs": runs, "target": {"wall_s": TARGET_S, "peak_rss_gb": TARGET_GB},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_after": [round(x, 1) for x in load]},
        "page_cache": "warm",
    }
    print(f"{'run':>3} {'wall s':>8} {'cpu s':>8} {'peak RSS GB':>12}")
    for i, r in enumerate(runs, 1):
        print(f"{i:>3} {r['wall_s']:>8} {r['cpu_s']:>8} {r['peak_rss_gb']:>12}")
    print(f"report length in characters: {result['report_chars']}")
    print(f"records written: {lines}; target < {TARGET_S:.0f} s and < {TARGET_GB} GB; "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} (other jobs share the machine)")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    atomic_write_json(results / "mimic_prepare.json", result)


if __name__ == "__main__":
    main()
