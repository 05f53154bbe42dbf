"""The HTTP service under load: requests/s and latency at 1, 4 and 16 concurrent clients.

    python benchmarks/bench_service.py --model MODEL --image examples/synthetic_pa_1.png [--requests 40]

Starts ``crrg serve``'s app with uvicorn on 127.0.0.1 in this process and drives it from client
threads over real TCP. Latency is per request (upload to answer), so it includes queueing.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import median, percentile, print_table, save_results, serve_in_thread  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=40, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,4,16")
    args = parser.parse_args()

    import httpx

    from crrg.models.registry import load_pretrained
    from crrg.serve.app import ServiceConfig, ServiceLimits, create_app

    generator = load_pretrained(args.model)
    app = create_app(generator, Path(args.model).name, "bench", ServiceConfig(limits=ServiceLimits(max_queue=64)))
    server, base = serve_in_thread(app)
    url = f"{base}/v1/report"
    data = args.image.read_bytes()
    rows, results = [], []
    with httpx.Client(timeout=300) as http:
        http.post(url, files={"image": ("x.png", data, "image/png")})  # warm-up
        for clients in [int(c) for c in args.concurrency.split(",")]:
            def one(_):
                t = time.perf_counter()
                r = http.post(url, files={"image": ("x.png", data, "image/png")})
                return time.perf_counter() - t, r.status_code

            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                out = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - start
            lat = [t for t, code in out if code == 200]
            errors = sum(code != 200 for _, code in out)
            row = [clients, args.requests, round(args.requests / wall, 2), round(median(lat) * 1e3, 1),
                   round(percentile(lat, 0.95) * 1e3, 1), errors]
            rows.append(row)
            results.append(dict(zip(["clients", "requests", "requests_per_s", "p50_ms", "p95_ms", "errors"], row)))
    server.should_exit = True
    table = print_table(f"service under load ({args.model})", ["clients", "requests", "req/s", "p50 ms", "p95 ms", "non-200"], rows)
    save_results("service_load", {"model": args.model, "image": str(args.image), "results": results}, table)


if __name__ == "__main__":
    main()
