"""Hostile load on the HTTP service: the current code beside the previous commit, in one run.

    python benchmarks/bench_hostile.py [--baseline-src /work/baseline/src] [--delay 0.08]

For each version a server is started in its own process (``crrg serve``'s app and server settings,
its default limits: 8 request slots, 32 MB uploads, 127.0.0.1) and driven over real TCP through
these phases:

* ``burst``: 200 simultaneous requests (examples/normal_frontal.png, 95 kB);  ``steady``: 300 requests,
  8 at a time;
* ``slow``: 200 slowloris connections (a header byte a second) and 50 trickling uploads (headers,
  then 100 bytes a second), while one well-behaved client keeps posting; time until each slow
  connection is closed (capped at ``--slow-cap`` s);
* ``bombs``: a PNG declaring 100000 x 100000 pixels, a 400-megapixel PNG of zeros (400 kB), a JPEG
  declaring 65000 x 65000, a deflated DICOM inflating to about 0.9 GB;
* ``large``: 24-megapixel films and 60-megapixel PNGs of zeros (116 kB), 2 at a time;
* ``waves``: two waves of 40 simultaneous 31 MB bodies.

Per phase: status counts, p50/p95 of admitted (200) answers, how fast refusals (4xx) came (time to
the first answer byte; the client keeps sending its body until an answer arrives, as HTTP allows),
and the server's peak RSS (sampled every 50 ms); then idle, peak and settled (10 s after the load)
RSS. The chest-radiograph gate is off in the current version (the previous one has none; the
resized example films are not all accepted by it). The model is a stand-in (``EchoGenerator`` of tests/serve with ``--delay`` s of "inference"):
the bundled model needs about 0.6 s a report on 2 cores, which would make the run last far longer
without exercising the service differently; decoding, admission and transport are the real code.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from common import median, percentile, print_table, save_results  # noqa: E402
from tests.serve.serve_helpers import png_declaring  # noqa: E402

BOUNDARY = "hostileboundary"


# ----------------------------------------------------------------------------------- the server side


def serve(port: int, delay: float) -> None:
    """The server process: the service's app around the stand-in model, run as ``crrg serve`` runs it."""
    import torch  # noqa: F401  (a real model server has it loaded: both versions start equal)

    from crrg.serve.app import ServiceConfig, create_app
    from tests.serve.serve_helpers import EchoGenerator

    try:  # the chest-radiograph gate off: the stand-in films are resized examples; the comparison is about load
        config = ServiceConfig(gate=False)
    except TypeError:  # the previous commit has no gate
        config = ServiceConfig()
    app = create_app(EchoGenerator(delay_s=delay), "stand-in", "bench", config)
    try:
        from crrg.serve.server import serve as run  # the current code: header deadline, connection cap
    except ImportError:  # the previous commit: plain uvicorn, as its crrg serve did
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        return
    run(app, "127.0.0.1", port)


# ----------------------------------------------------------------------------------- inputs


EXAMPLE = ROOT / "examples" / "normal_frontal.png"  # a synthetic chest film: passes a chest-radiograph check


def png(width: int, height: int, pattern: str = "film") -> bytes:
    """A PNG of ``width`` x ``height``: the example film resized, or zeros (a bomb's usual content)."""
    import numpy as np
    from PIL import Image

    if pattern == "zeros":
        image = Image.fromarray(np.zeros((height, width), np.uint8))
    else:
        image = Image.open(EXAMPLE).convert("L").resize((width, height), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def declared_jpeg(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 header is rewritten to declare ``width`` x ``height``."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def deflated_dicom_bomb(side: int) -> bytes | None:
    """A deflated DICOM inflating to ``side``**2 bytes (None without the image tests' helper)."""
    try:
        from tests.image.conftest import deflated_dicom
    except ImportError:
        return None
    return deflated_dicom(side, side)


def multipart(data: bytes, name: str = "x.png") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


# ----------------------------------------------------------------------------------- the client side


@dataclass
class Answer:
    status: int | None  # None: no answer (connection refused, reset or timed out)
    first_s: float  # time to the first byte of the answer
    total_s: float


def post(port: int, body: bytes, timeout: float = 180.0, chunk: int = 256 * 1024) -> Answer:
    """POST a multipart body, reading while sending: stops sending as soon as an answer arrives."""
    t0 = time.perf_counter()
    head = (f"POST /v1/report HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    first = None
    answer = bytearray()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return Answer(None, time.perf_counter() - t0, time.perf_counter() - t0)
    with sock:
        try:
            sock.sendall(head)
            sock.setblocking(False)
            view, sent, writing = memoryview(body), 0, True
            while time.perf_counter() - t0 < timeout:
                want = [sock] if writing and sent < len(body) else []
                readable, writable, _ = select.select([sock], want, [], 1.0)
                if readable:
                    data = sock.recv(65536)
                    if not data:
                        break
                    first = first or time.perf_counter()
                    answer += data
                    writing = False  # an answer came: the rest of the body is not wanted
                    if _complete(answer):
                        break
                if writable:
                    try:
                        sent += sock.send(view[sent:sent + chunk])
                    except BlockingIOError:
                        pass
        except OSError:
            pass
    now = time.perf_counter()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    return Answer(status, (first or now) - t0, now - t0)


def _complete(answer: bytearray) -> bool:
    head, sep, rest = bytes(answer).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value)
    return False


def run_concurrent(port: int, bodies: list[bytes], concurrency: int, simultaneous: bool = False) -> list[Answer]:
    barrier = threading.Barrier(len(bodies)) if simultaneous else None

    def one(body: bytes) -> Answer:
        if barrier is not None:
            barrier.wait()
        return post(port, body)

    with ThreadPoolExecutor(len(bodies) if simultaneous else concurrency) as pool:
        return list(pool.map(one, bodies))


async def _slow_connection(port: int, cap: float, upload: bool) -> tuple[float | None, int | None]:
    """A slowloris (``upload`` False) or a trickling upload; seconds until the server closed it, and the
    status it answered (if any)."""
    t0 = time.perf_counter()
    status = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if upload:
            writer.write((f"POST /v1/report HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
                          f"boundary={BOUNDARY}\r\nContent-Length: 1000000\r\n\r\n--{BOUNDARY}\r\n").encode())
        else:
            writer.write(f"POST /v1/report HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode())
        while time.perf_counter() - t0 < cap:
            try:
                data = await asyncio.wait_for(reader.read(4096), 1.0)
            except asyncio.TimeoutError:
                writer.write(b"x" * (100 if upload else 1))
                continue
            if not data:
                return time.perf_counter() - t0, status
            if status is None and data.startswith(b"HTTP/1.1 "):
                status = int(data.split(b" ", 2)[1])
        writer.close()
        return None, status
    except OSError:
        return time.perf_counter() - t0, status


def slow_clients(port: int, cap: float, n_loris: int, n_trickle: int) -> tuple[list, list]:
    async def main():
        tasks = [_slow_connection(port, cap, False) for _ in range(n_loris)]
        tasks += [_slow_connection(port, cap, True) for _ in range(n_trickle)]
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    return results[:n_loris], results[n_loris:]


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.phase_peak: dict[str, float] = {}
        self.phase = "idle"
        self.current = 0.0
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            try:
                self.current = self.process.memory_info().rss / 2**20
            except Exception:
                return
            self.phase_peak[self.phase] = max(self.phase_peak.get(self.phase, 0.0), self.current)
            time.sleep(0.05)


# ----------------------------------------------------------------------------------- one version


@dataclass
class PhaseResult:
    phase: str
    answers: list[Answer] = field(default_factory=list)
    peak_mb: float = 0.0
    note: str = ""

    def row(self, version: str) -> list:
        statuses = Counter("none" if a.status is None else a.status for a in self.answers)
        admitted = [a.total_s for a in self.answers if a.status == 200]
        refused = [a.first_s for a in self.answers if a.status is not None and 400 <= a.status < 500]
        fmt = lambda v: round(v * 1e3) if v == v else "-"  # noqa: E731  (NaN: none)
        return [version, self.phase, len(self.answers), " ".join(f"{k}:{v}" for k, v in sorted(statuses.items(), key=str)),
                fmt(median(admitted)), fmt(percentile(admitted, 0.95)), fmt(percentile(refused, 0.95)),
                fmt(max(refused)) if refused else "-", sum(t > 0.1 for t in refused), round(self.peak_mb), self.note]


def make_inputs() -> dict:
    print("making the inputs ...", flush=True)
    junk = multipart(os.urandom(31 * 2**20 - 512), "x.bin")
    inputs = {"small": multipart(EXAMPLE.read_bytes()), "junk31mb": junk,
              "large": [multipart(png(4_900, 4_900))] * 4 + [multipart(png(7_745, 7_745, "zeros"))] * 4}
    bombs = [multipart(png_declaring(100_000, 100_000))] * 3 + [multipart(png(12_000, 12_000, "zeros"))] * 3
    bombs += [multipart(declared_jpeg(65_000, 65_000), "x.jpg")] * 3
    dicom_bomb = deflated_dicom_bomb(30_000)
    inputs["bombs"] = bombs + ([multipart(dicom_bomb, "x.dcm")] * 2 if dicom_bomb is not None else [])
    inputs["bomb_note"] = "" if dicom_bomb is not None else "no DICOM bomb (tests/image helper missing)"
    return inputs


class Server:
    """One version's server process, its RSS sampler and its results."""

    def __init__(self, label: str, pythonpath: str, delay: float):
        self.label = label
        self.port = _free_port()
        env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", str(self.port), "--delay", str(delay)],
                                        env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.results: list[PhaseResult] = []
        self.idle_mb = self.settled_mb = 0.0

    def start(self, small: bytes) -> None:
        _wait_for(self.port)
        self.sampler = RssSampler(self.process.pid)
        self.sampler.start()
        run_concurrent(self.port, [small] * 4, 1)  # warm-up

    def phase(self, name: str, fn) -> PhaseResult:
        self.sampler.phase = name
        print(f"[{self.label}] {name} ...", flush=True)
        result = PhaseResult(name, fn(self.port))
        result.peak_mb = self.sampler.phase_peak.get(name, self.sampler.current)
        self.results.append(result)
        return result

    @property
    def peak_mb(self) -> float:
        return max(self.sampler.phase_peak.values())

    def stop(self) -> None:
        self.sampler.stop = True
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def slow_phase(port: int, small: bytes, cap: float) -> tuple[list[Answer], str]:
    """Slow clients while one well-behaved client keeps posting; its answers, and a note on the closes."""
    done = threading.Event()
    legit: list[Answer] = []

    def keep_posting():
        while not done.is_set():
            legit.append(post(port, small))
            time.sleep(0.5)

    poster = threading.Thread(target=keep_posting)
    poster.start()
    loris, trickle = slow_clients(port, cap, 200, 50)
    done.set()
    poster.join()
    closes = [t for t, _ in loris + trickle]
    closed = [t for t in closes if t is not None]
    note = (f"slow clients closed: {len(closed)}/{len(closes)}, max {max(closed):.1f} s" if closed else
            f"slow clients closed: 0/{len(closes)}") + f" (cap {cap:g} s)"
    answered = Counter(status for _, status in trickle if status is not None)
    note += "; trickling uploads answered " + (", ".join(f"{k}: {v}" for k, v in sorted(answered.items())) or "nothing")
    return legit, note


def waves(port: int, junk: bytes) -> list[Answer]:
    answers: list[Answer] = []
    for _ in range(2):
        answers += run_concurrent(port, [junk] * 40, 40, simultaneous=True)
        time.sleep(2)
    return answers


def bench(versions: list[tuple[str, str]], args) -> list[Server]:
    """Every phase on each version in turn (so both see the machine in the same state), then RSS."""
    inputs = make_inputs()
    small = inputs["small"]
    servers = [Server(label, path, args.delay) for label, path in versions]
    try:
        for server in servers:
            server.start(small)
        time.sleep(2)
        for server in servers:
            server.idle_mb = server.sampler.current
        notes: dict[str, str] = {}

        def slow(port: int) -> list[Answer]:
            answers, notes[str(port)] = slow_phase(port, small, args.slow_cap)
            return answers

        phases = [("burst 200", lambda port: run_concurrent(port, [small] * 200, 200, simultaneous=True)),
                  ("steady 300x8", lambda port: run_concurrent(port, [small] * 300, 8)),
                  ("slow (legit client)", slow),
                  ("bombs", lambda port: run_concurrent(port, inputs["bombs"], 1)),
                  ("large 24/60 MP", lambda port: run_concurrent(port, inputs["large"], 2))]
        for i, (name, fn) in enumerate(phases):
            for server in (servers if i % 2 == 0 else servers[::-1]):  # neither version always goes first
                result = server.phase(name, fn)
                result.note = notes.get(str(server.port), "") if name.startswith("slow") else (
                    inputs["bomb_note"] if name == "bombs" else "")
        for server in servers:  # the last phase, then 10 s of rest, one version at a time
            server.phase("waves 2x40x31MB", lambda port: waves(port, inputs["junk31mb"]))
            server.sampler.phase = "settle"
            time.sleep(10)
            server.settled_mb = server.sampler.current
    finally:
        for server in servers:
            server.stop()
    return servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server on port {port} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-src", default="/work/baseline/src", help="src folder of the previous version ('' = skip)")
    parser.add_argument("--delay", type=float, default=0.08, help="seconds of stand-in inference per report")
    parser.add_argument("--slow-cap", type=float, default=35.0, help="seconds the slow clients wait to be closed")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.delay)

    versions = [("current", str(ROOT / "src"))]
    if args.baseline_src:
        versions.append(("baseline", args.baseline_src))
    load_before = os.getloadavg()[0]
    servers = bench(versions, args)
    load_after = os.getloadavg()[0]
    header = ["version", "phase", "requests", "statuses", "p50 ms", "p95 ms", "refused p95 ms", "refused max ms",
              "refused >100 ms", "peak RSS MB", "note"]
    rows = [r.row(server.label) for name in [r.phase for r in servers[0].results] for server in servers
            for r in server.results if r.phase == name]
    table = print_table(f"hostile load (stand-in model, {args.delay:g} s a report; see the script's docstring)", header, rows)
    rss_rows = [[s.label, round(s.idle_mb), round(s.peak_mb), round(s.settled_mb), round(s.settled_mb - s.idle_mb)]
                for s in servers]
    table += "\n\n" + print_table("server RSS", ["version", "idle MB", "peak MB", "settled MB (10 s after)",
                                                   "settled - idle MB"], rss_rows)
    payload = {"delay_s": args.delay, "slow_cap_s": args.slow_cap,
               "runs": [{"label": s.label, "idle_mb": s.idle_mb, "peak_mb": s.peak_mb, "settled_mb": s.settled_mb,
                         "phases": [dict(zip(header, r.row(s.label))) for r in s.results]} for s in servers]}
    table += (f"\n\nLoad average (1 min) {load_before:.1f} at the start, {load_after:.1f} at the end: other jobs shared "
              "the cores, and client and servers ran on the same machine, so absolute latencies are pessimistic; "
              "the versions ran phase by phase in alternating order.")
    payload.update(load_average_start=load_before, load_average_end=load_after)
    save_results("hostile", json.loads(json.dumps(payload, default=str)), table)


if __name__ == "__main__":
    main()
