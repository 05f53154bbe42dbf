"""Giving memory back to the system after large requests (glibc only; a no-op elsewhere).

A 31 MB upload is one large buffer. glibc serves the first such buffer from ``mmap`` and returns it
on free, but then raises its mmap threshold to the freed size, so the next ones come from the heap,
and a freed heap is kept by the process: after a few waves of large uploads the server held
hundreds of MB it no longer used. Two remedies, both cheap: a fixed mmap threshold (large buffers
always ``mmap``-ed, so freeing them unmaps them) set once when the server starts, and a
``malloc_trim`` when the service goes idle (what is left free in the heaps goes back). (Buffers held
in reference cycles by an exception's frames are released by the service itself: see
``crrg.serve.app._release_frames``; a full garbage collection with a model loaded takes ~0.7 s.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time

log = logging.getLogger("crrg.serve")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 1 << 20  # buffers of 1 MB and more are mmap-ed and unmapped when freed


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


_LIBC = _libc()


def fix_mmap_threshold() -> bool:
    """Keep large buffers out of the heap (process-wide; call once at server start)."""
    return bool(_LIBC is not None and _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


class Trimmer:
    """``malloc_trim(0)`` at most every ``min_interval_s`` seconds (it walks the heaps: a few ms)."""

    def __init__(self, min_interval_s: float = 1.0):
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._lock = threading.Lock()

    def trim(self) -> None:
        if _LIBC is None:
            return
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.min_interval_s:
                return
            self._last = now
        _LIBC.malloc_trim(0)
