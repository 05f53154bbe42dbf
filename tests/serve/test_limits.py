"""Load limits of the service (issue 23 items 2, 3, 4): slots held until work ends, admission before
the body is read, and deadlines for slow clients. Each test failed on the previous version."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from crrg.serve.app import ServiceLimits, create_app
from tests.serve.serve_helpers import (EchoGenerator, LiveServer, closed_within, multipart_body, multipart_head,
                                       png_bytes, read_status, service_config)

FILES = {"image": ("a.png", png_bytes(), "image/png")}


def client_for(generator, **config) -> TestClient:
    return TestClient(create_app(generator, "echo", "1.0", service_config(**config)), base_url="http://localhost")


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_timed_out_inference_keeps_its_slot_until_it_really_ends():
    """--max-queue 1 --timeout 0.3: the timed-out job still runs, so the next requests get 429, not 504."""
    generator = EchoGenerator(delay_s=1.5)
    client = client_for(generator, limits=ServiceLimits(max_queue=1, inference_timeout_s=0.3))
    assert client.post("/v1/report", files=FILES).status_code == 504
    assert client.get("/healthz").json()["busy"] == 1  # the job is still running
    assert [client.post("/v1/report", files=FILES).status_code for _ in range(5)] == [429] * 5
    assert generator.calls == 1  # nothing piled onto the busy model
    assert wait_until(lambda: client.get("/healthz").json()["busy"] == 0)  # freed when the job returns
    assert client.post("/v1/report", files=FILES).status_code == 504  # admitted again
    assert generator.calls == 2


def test_job_waiting_in_the_pool_is_cancelled_on_timeout_and_frees_its_slot():
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from crrg.serve.admission import Admission

    pool = ThreadPoolExecutor(1)
    admission = Admission(2)
    ran = []

    async def scenario():
        blocker, waiter = admission.admit(), admission.admit()
        first = asyncio.ensure_future(blocker.run(pool, lambda: time.sleep(0.5), 5))
        await asyncio.sleep(0.05)
        with pytest.raises(asyncio.TimeoutError):
            await waiter.run(pool, lambda: ran.append(1), 0.1)  # queued behind the blocker
        waiter.close()
        assert admission.busy == 1  # the never-started job gave its slot back at once
        await first
        blocker.close()

    asyncio.run(scenario())
    pool.shutdown()
    assert admission.busy == 0 and ran == []


def test_full_service_refuses_a_large_upload_before_reading_its_body():
    """The 429 comes while the client has sent only the headers of a 31 MB body."""
    app = create_app(EchoGenerator(delay_s=2.0), "echo", "1.0", service_config(limits=ServiceLimits(max_queue=1)))
    with LiveServer(app) as server:
        busy = socket.create_connection(("127.0.0.1", server.port))
        body = multipart_body(png_bytes())
        busy.sendall(multipart_head(server.port, len(body)) + body)
        assert wait_until(lambda: httpx.get(f"{server.url}/healthz").json()["busy"] == 1, 5)
        with socket.create_connection(("127.0.0.1", server.port)) as big:
            start = time.perf_counter()
            big.sendall(multipart_head(server.port, 31 * 1024 * 1024) + b"--crrgboundary\r\n")
            assert read_status(big, timeout=1.0) == 429
            assert time.perf_counter() - start < 1.0
        busy.close()


def test_chunked_upload_over_the_limit_is_cut_off_with_413():
    client = client_for(EchoGenerator(), limits=ServiceLimits(max_upload_bytes=100_000))
    body = multipart_body(b"\x89PNG" + b"0" * 300_000)

    def chunks():
        for i in range(0, len(body), 16_384):
            yield body[i:i + 16_384]

    r = client.post("/v1/report", content=chunks(),
                    headers={"content-type": "multipart/form-data; boundary=crrgboundary"})
    assert r.status_code == 413


def _trickle_until_closed(sock: socket.socket, payload: bytes, timeout: float, every: float = 0.1) -> float | None:
    """Send ``payload`` one byte every ``every`` s; seconds until the server closes, None if it never does."""
    start = time.perf_counter()
    for byte in payload:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return time.perf_counter() - start
        if closed_within(sock, every) is not None:
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            return None
    return None


def test_slowloris_headers_are_cut_off_at_the_header_deadline():
    from crrg.serve.server import ConnectionLimits

    app = create_app(EchoGenerator(), "echo", "1.0", service_config())
    with LiveServer(app, ConnectionLimits(header_timeout_s=0.6)) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as idle:
            assert closed_within(idle, 3.0) is not None  # connected, never sent a byte
        with socket.create_connection(("127.0.0.1", server.port)) as slow:
            headers = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"X-Pad: " + b"a" * 200
            took = _trickle_until_closed(slow, headers, timeout=5.0)
            assert took is not None and took < 2.0


def test_trickling_body_gets_408_at_the_body_deadline():
    from crrg.serve.server import ConnectionLimits

    generator = EchoGenerator()
    app = create_app(generator, "echo", "1.0", service_config(limits=ServiceLimits(body_timeout_s=0.5)))
    with LiveServer(app, ConnectionLimits(header_timeout_s=0.5)) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as slow:
            body = multipart_body(png_bytes())
            slow.sendall(multipart_head(server.port, len(body)) + body[:10])
            assert read_status(slow, timeout=3.0) == 408
        assert httpx.get(f"{server.url}/healthz").json()["busy"] == 0 and generator.calls == 0


def test_refused_upload_trickled_on_is_closed():
    """uvicorn drops the rest of a refused body; a client trickling it is disconnected at the deadline."""
    from crrg.serve.server import ConnectionLimits

    app = create_app(EchoGenerator(), "echo", "1.0", service_config(api_keys=frozenset({"k" * 20})))
    limits = ConnectionLimits(header_timeout_s=0.5, keep_alive_s=1, linger_s=1.0)
    with LiveServer(app, limits) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as slow:
            slow.sendall(multipart_head(server.port, 10_000))
            assert read_status(slow, timeout=2.0) == 401
            took = _trickle_until_closed(slow, b"x" * 10_000, timeout=6.0)
            assert took is not None and took < 2.5


def test_client_that_sends_its_whole_body_before_reading_still_gets_the_429():
    """A refusal closes the connection without reading the body; httpx (which writes the whole body
    before it reads) still gets the 429, not a connection error."""
    from crrg.serve.server import ConnectionLimits

    app = create_app(EchoGenerator(delay_s=3.0), "echo", "1.0", service_config(limits=ServiceLimits(max_queue=1)))
    with LiveServer(app, ConnectionLimits(linger_s=1.0)) as server:
        busy = socket.create_connection(("127.0.0.1", server.port))
        small = multipart_body(png_bytes())
        busy.sendall(multipart_head(server.port, len(small)) + small)
        assert wait_until(lambda: httpx.get(f"{server.url}/healthz").json()["busy"] == 1, 5)
        body = multipart_body(b"\0" * (20 * 1024 * 1024))
        r = httpx.post(f"{server.url}/v1/report", content=body, timeout=10,
                       headers={"content-type": "multipart/form-data; boundary=crrgboundary"})
        assert r.status_code == 429
        busy.close()


def test_deflated_dicom_bomb_is_refused_without_inflating_it():
    """The service's own DICOM header read used to inflate the whole dataset (issue 23 item 1)."""
    import resource

    from tests.image.conftest import deflated_dicom

    bomb = deflated_dicom(12_000, 12_000)  # ~150 KB inflating to 144 MB
    client = client_for(EchoGenerator())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB
    start = time.perf_counter()
    r = client.post("/v1/report", files={"image": ("x.dcm", bomb, "application/dicom")})
    assert r.status_code == 400, r.text
    assert time.perf_counter() - start < 3.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before < 100


def test_admission_calls_on_idle_when_the_last_slot_is_freed():
    from crrg.serve.admission import Admission, QueueFull

    idle = []
    admission = Admission(2, on_idle=lambda: idle.append(admission.busy))
    first, second = admission.admit(), admission.admit()
    with pytest.raises(QueueFull):
        admission.admit()
    first.close()
    first.close()  # closing twice frees one slot
    assert idle == [] and admission.busy == 1
    second.close()
    assert idle == [0] and admission.busy == 0


def test_client_gone_mid_upload_is_no_server_error(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="crrg.serve")
    app = create_app(EchoGenerator(), "echo", "1.0", service_config())
    with LiveServer(app) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as gone:
            gone.sendall(multipart_head(server.port, 100_000) + b"--crrgboundary\r\n")
            assert wait_until(lambda: httpx.get(f"{server.url}/healthz").json()["busy"] == 1, 5)
        assert wait_until(lambda: httpx.get(f"{server.url}/healthz").json()["busy"] == 0, 5)
    assert "unexpected error" not in caplog.text


def test_failed_large_uploads_do_not_wait_for_the_garbage_collector():
    """A failed request's buffers are freed when it is answered: an exception that came through an
    asyncio future used to keep them in a reference cycle until a full garbage collection."""
    import gc
    import tracemalloc

    app = create_app(EchoGenerator(), "echo", "1.0", service_config())
    body = multipart_body(b"\x89PNG" + b"\0" * (8 * 1024 * 1024))  # not a decodable image: 400 from the worker

    def post_junk() -> int | None:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(multipart_head(server.port, len(body)) + body)
            return read_status(sock, timeout=10)

    with LiveServer(app) as server:
        assert post_junk() == 400  # warm-up
        gc.collect()
        gc.disable()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            assert [post_junk() for _ in range(5)] == [400] * 5
            time.sleep(0.2)
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
            gc.enable()
    assert held < 8 * 1024 * 1024, f"{held / 2**20:.0f} MB still held after 5 failed 8 MB uploads"
