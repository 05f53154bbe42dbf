"""API-key checking and request-size limiting for the service.

Keys are compared in constant time (``hmac.compare_digest``) against every configured key, so the
answer time does not reveal how much of a key was right. The body limit is enforced while the body
streams in, so a client cannot make the server buffer an oversized upload by omitting
``Content-Length``.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from crrg.errors import ConfigError


def read_api_keys(path: str | Path) -> frozenset[str]:
    """One key per line; blank lines and ``#`` comments ignored. An empty file is an error, not 'open'."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"API key file {path} does not exist")
    keys = frozenset(line.strip() for line in path.read_text().splitlines() if line.strip() and not line.strip().startswith("#"))
    if not keys:
        raise ConfigError(f"API key file {path} holds no keys; add one key per line")
    if any(len(k) < 16 for k in keys):
        raise ConfigError(f"API key file {path} holds a key shorter than 16 characters; use long random keys")
    return keys


def key_is_valid(candidate: str | None, keys: frozenset[str]) -> bool:
    if not candidate:
        return False
    given = candidate.encode()
    ok = False
    for key in keys:  # no early exit: every key is compared
        ok |= hmac.compare_digest(given, key.encode())
    return ok


def presented_key(headers) -> str | None:
    """The key a client sent, as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-api-key")


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """ASGI middleware answering 413 once a request body passes ``max_bytes``."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        seen = 0
        response_started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await self._reject(send)

    async def _reject(self, send):
        body = b'{"detail":"upload too large: the limit is %d bytes"}' % self.max_bytes
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
