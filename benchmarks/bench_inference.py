"""Report latency per study at 256 and 512 px (p50 / p95), batch throughput and peak memory.

    python benchmarks/bench_inference.py --model crrg-default [--repeats 12] [--threads 2]

The frontal and lateral example images are resized to each size; one study = both views. Batch
throughput runs ``crrg report``'s batch path (decode workers + generation) over the example manifest
repeated. Peak memory is the process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import median, percentile, print_table, save_results  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="crrg-default")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-studies", type=int, default=16)
    args = parser.parse_args()

    import os

    import numpy as np
    import torch
    from PIL import Image

    from crrg.image import load_image
    from crrg.inference.batch import StudyJob, run_batch
    from crrg.models.registry import load_pretrained
    from crrg.reporting import StudyInput

    torch.set_num_threads(args.threads)
    generator = load_pretrained(args.model)
    frontal = load_image(EXAMPLES / "heart-failure_frontal.png")
    lateral = load_image(EXAMPLES / "heart-failure_lateral.png")
    rows, results = [], {}
    for size in (256, 512):
        def resized(img):
            return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR), dtype=np.float32)

        study = StudyInput(images=[resized(frontal), resized(lateral)], views=["PA", "LATERAL"], indication="Dyspnea.")
        generator.generate_report(study)  # warm-up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            generator.generate_report(study)
            times.append(time.perf_counter() - t)
        results[f"latency_{size}px"] = {"p50_s": median(times), "p95_s": percentile(times, 0.95), "n": len(times)}
        rows.append([f"latency per study, {size} px", f"p50 {median(times):.3f} s, p95 {percentile(times, 0.95):.3f} s"])

    with tempfile.TemporaryDirectory() as tmp:
        jobs = [StudyJob(f"s{i}", [str(EXAMPLES / "heart-failure_frontal.png"), str(EXAMPLES / "heart-failure_lateral.png")],
                         ["PA", "LATERAL"]) for i in range(args.batch_studies)]
        summary = run_batch(generator, jobs, Path(tmp) / "out.jsonl", workers=1)
    results["batch"] = summary.as_dict()
    rows.append(["batch throughput (256 px studies, 1 decode worker)", f"{summary.as_dict()['studies_per_second']} studies/s"])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["peak_rss_mb"] = round(peak_mb, 1)
    rows.append(["peak resident memory", f"{peak_mb:.0f} MB"])
    load = os.getloadavg()[0]
    rows.append(["load average (1 min) at the end", f"{load:.1f}"])
    table = print_table(f"inference ({args.model}, {args.threads} torch threads)", ["measurement", "value"], rows)
    save_results("inference", {"model": args.model, "threads": args.threads, "load_1min": load, **results}, table)


if __name__ == "__main__":
    main()
