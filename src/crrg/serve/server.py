"""Running the app with uvicorn, with the connection-level limits that uvicorn lacks.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` but has no deadline for
a request's headers: a client that opens a connection and sends one header byte every few seconds
(slowloris) holds it forever, and so does one trickling the rest of a body the app already refused
(uvicorn reads and drops it, and every byte restarts its idle timer). :class:`GuardedH11Protocol`
adds that deadline: a request's headers must be complete within ``header_timeout_s`` of the
connection opening (or of the previous answer, plus the keep-alive time), and a body left over
after the answer must have arrived by then too, else the connection is closed. The body of an
admitted request has its own deadline in the app (``ServiceLimits.body_timeout_s``, answered 408);
``limit_concurrency`` caps open connections (uvicorn answers 503 beyond it).

A reverse proxy in front (docs/serving.md) does the same with its own buffers and timeouts.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("crrg.serve")


@dataclass
class ConnectionLimits:
    header_timeout_s: float = 10.0  # a request's headers (and any body left over after an answer) must arrive by then
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    max_connections: int = 512  # open connections (and requests) at most; uvicorn answers 503 beyond


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's headers (see the module docstring)."""

    header_timeout_s: float = ConnectionLimits.header_timeout_s

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm(self.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before and self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # a new request's headers are complete: the app's own deadlines take over

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm(self.timeout_keep_alive + self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._deadline_passed)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered; the app's deadlines apply
        if not self.transport.is_closing():
            log.info("closing a connection that did not send a complete request in time")
            self.transport.close()


def protocol_with(header_timeout_s: float) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass with the given header deadline (uvicorn takes a class)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout_s": header_timeout_s})


def uvicorn_config(app, host: str, port: int, limits: ConnectionLimits | None = None, **kwargs):
    """A ``uvicorn.Config`` with the guarded protocol, keep-alive timeout and connection cap."""
    import uvicorn

    limits = limits or ConnectionLimits()
    return uvicorn.Config(app, host=host, port=port, http=protocol_with(limits.header_timeout_s),
                          timeout_keep_alive=limits.keep_alive_s, limit_concurrency=limits.max_connections,
                          server_header=False, **kwargs)


def serve(app, host: str, port: int, limits: ConnectionLimits | None = None) -> None:
    """Run ``app`` until interrupted (what ``crrg serve`` does)."""
    import uvicorn

    uvicorn.Server(uvicorn_config(app, host, port, limits, log_level="warning", access_log=False)).run()
