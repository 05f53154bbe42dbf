"""Shared helpers of the benchmark scripts: machine description, medians/percentiles, result tables."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(title: str, header: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = [f"## {title}", "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    text = "\n".join(lines)
    print(text)
    return text


def save_results(name: str, payload: dict, table: str | None = None) -> Path:
    from crrg.io import atomic_write_json, atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **payload}
    atomic_write_json(RESULTS / f"{name}.json", payload)
    if table:
        atomic_write_text(RESULTS / f"{name}.md", f"Machine: {payload['machine']}\n\n{table}\n")
    return RESULTS / f"{name}.json"


def serve_in_thread(app):
    """Run an ASGI app with uvicorn on a free 127.0.0.1 port in a daemon thread; returns (server, base URL)."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def add_worker_arguments(parser) -> None:
    """The hidden arguments of a benchmark that runs each code version in a subprocess of itself
    (:func:`worker_command`): ``--worker``, ``--items`` (a JSON list) and ``--out`` (JSONL rows)."""
    import argparse

    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--items", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)


def worker_command(script: str, src, model: str, items, out, threads: int = 1) -> tuple[list[str], dict]:
    """The command and environment that run ``script --worker`` on the code in ``src`` (first on
    PYTHONPATH, so the previous version's code runs its own model) with ``threads`` torch threads."""
    import sys

    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(Path(script).resolve()), "--worker", "--model", model, "--items", str(items),
           "--out", str(out)]
    return cmd, env

