"""Admission control: a fixed number of request slots, each held until its work has really ended.

A request takes a slot before its body is read (so a refused upload costs neither memory nor
time: the answer is a 429 before the first body byte is looked at) and gives it back only when the
last piece of work it started has finished. A decode or inference that times out keeps running in
its worker thread (Python cannot stop a thread), so the request's slot stays taken until that
thread returns: otherwise every timeout would let one more job pile onto the busy model, and a
stuck model would be flooded without bound while ``/healthz`` reported it idle.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Executor, Future
from typing import Any, Callable


class QueueFull(Exception):
    """Every slot is taken: the caller answers 429."""


class Admission:
    """``max_slots`` requests in flight at most (uploading, decoding, waiting for or running inference).

    Thread-safe: slots are released from worker threads when a timed-out job finally returns.
    """

    def __init__(self, max_slots: int, on_idle: Callable[[], None] | None = None):
        self.max_slots = max_slots
        self.on_idle = on_idle  # called (in the releasing thread) each time the last slot is freed
        self._busy = 0
        self._lock = threading.Lock()

    @property
    def busy(self) -> int:
        """Slots taken, including those held by timed-out work that is still running."""
        return self._busy

    def admit(self) -> "Slot":
        with self._lock:
            if self._busy >= self.max_slots:
                raise QueueFull()
            self._busy += 1
        return Slot(self)

    def _release(self) -> None:
        with self._lock:
            self._busy -= 1
            idle = self._busy == 0
        if idle and self.on_idle is not None:
            self.on_idle()


class Slot:
    """One admitted request. Work runs through :meth:`run`; :meth:`close` frees the slot once the
    work has ended (at once when nothing is running, else when the running job returns)."""

    def __init__(self, admission: Admission):
        self._admission = admission
        self._running: Future | None = None
        self._closed = False

    async def run(self, pool: Executor, fn: Callable[[], Any], timeout: float) -> Any:
        """``fn()`` in ``pool``; ``asyncio.TimeoutError`` after ``timeout`` s (the job keeps its slot).

        A job still waiting in the pool's queue when the time is up is cancelled and never runs.
        """
        if self._running is not None and not self._running.done():
            raise RuntimeError("a slot runs one job at a time")
        job = pool.submit(fn)
        self._running = job
        # wrap_future: cancelling the awaitable on timeout cancels a job that has not started; a job
        # already running is unaffected, and ``job`` (not the wrapper) tells when it really ends
        return await asyncio.wait_for(asyncio.wrap_future(job), timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        job = self._running
        if job is None or job.done():
            self._admission._release()
        else:
            job.add_done_callback(lambda _job: self._admission._release())
