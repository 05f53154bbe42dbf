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

Closing a connection while the client is still sending (a refused upload: the service answers
429, 413 or 401 before reading the body, with ``Connection: close``) would make the kernel reset it,
and the client could lose the answer. So a close is *lingering*, as nginx does: the answer is sent,
the write side shut down, and whatever else arrives is dropped unparsed for ``linger_s`` seconds (or
until the client closes) before the socket is closed; past ``linger_bytes`` the socket is no longer
read at all (a client still pushing its body then finds the answer when its write fails, which
HTTP clients handle). Letting uvicorn parse a refused 31 MB body through h11 instead costs the event
loop tens of milliseconds that every other request waits for.

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
    linger_s: float = 3.0  # after an answer with Connection: close, unread input is dropped this long
    linger_bytes: int = 1 << 20  # ... but no more than this: then reading stops until the socket closes


class LingeringTransport:
    """The socket's transport, with :meth:`close` turned into a lingering close (module docstring)."""

    def __init__(self, transport: asyncio.Transport, protocol: "GuardedH11Protocol"):
        self._transport = transport
        self._protocol = protocol
        self._lingering = False

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    @property
    def lingering(self) -> bool:
        return self._lingering

    def is_closing(self) -> bool:
        return self._lingering or self._transport.is_closing()

    def close(self) -> None:
        if self._lingering or self._transport.is_closing():
            return
        self._lingering = True
        try:
            if self._transport.can_write_eof():
                self._transport.write_eof()  # the answer is flushed first, then FIN
            self._transport.resume_reading()
        except (OSError, RuntimeError):
            self._transport.close()
            return
        self._protocol.loop.call_later(self._protocol.linger_s, self._transport.close)

    def close_now(self) -> None:
        self._lingering = True
        self._transport.close()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's headers (see the module docstring)."""

    header_timeout_s: float = ConnectionLimits.header_timeout_s
    linger_s: float = ConnectionLimits.linger_s
    linger_bytes: int = ConnectionLimits.linger_bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._arm(self.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self.transport.lingering:  # the connection is closing: input is dropped unparsed, up to a point
            self._dropped = getattr(self, "_dropped", 0) + len(data)
            if self._dropped > self.linger_bytes:
                self.transport.pause_reading()  # a client still sending gets no more of our time
            return
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before and self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # a new request's headers are complete: the app's own deadlines take over

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm(self.timeout_keep_alive + self.header_timeout_s)

    def eof_received(self) -> bool | None:
        if self.transport.lingering:
            self.transport.close_now()  # the client has finished sending: no need to wait any longer
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        super().shutdown()
        if self.transport.lingering:  # the server is stopping: no lingering on idle connections
            self.transport.close_now()

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
        if not self.transport.is_closing() or self.transport.lingering:
            log.info("closing a connection that did not send a complete request in time")
            self.transport.close_now()


def protocol_with(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass with the given deadlines (uvicorn takes a class)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"header_timeout_s": limits.header_timeout_s, "linger_s": limits.linger_s,
                 "linger_bytes": limits.linger_bytes})


def uvicorn_config(app, host: str, port: int, limits: ConnectionLimits | None = None, **kwargs):
    """A ``uvicorn.Config`` with the guarded protocol, keep-alive timeout and connection cap."""
    import uvicorn

    limits = limits or ConnectionLimits()
    return uvicorn.Config(app, host=host, port=port, http=protocol_with(limits),
                          timeout_keep_alive=limits.keep_alive_s, limit_concurrency=limits.max_connections,
                          server_header=False, **kwargs)


def serve(app, host: str, port: int, limits: ConnectionLimits | None = None) -> None:
    """Run ``app`` until interrupted (what ``crrg serve`` does)."""
    import uvicorn

    from crrg.serve.memory import fix_mmap_threshold

    fix_mmap_threshold()

    uvicorn.Server(uvicorn_config(app, host, port, limits, log_level="warning", access_log=False)).run()
