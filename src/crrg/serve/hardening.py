"""Browser-facing protections for a service that may run without an API key on localhost.

Without a key, anything that can make the user's browser send a request to ``127.0.0.1`` could use
the service: a web page posting a cross-site form, or a page on an attacker's domain whose DNS name
is re-pointed at 127.0.0.1 (DNS rebinding) and then reads the answers as same-origin. So:

* the ``Host`` header must name this service (an allow-list: localhost names and the bound address
  by default), which defeats DNS rebinding: the rebinding page's requests carry its own host name;
* state-changing requests (POST) that a browser marks as cross-site (``Sec-Fetch-Site``) or whose
  ``Origin`` is not this service (nor an allowed CORS origin) are refused with 403, so a hostile
  page cannot make the service work with a form post (non-browser clients send neither header);
* every answer carries security headers: no MIME sniffing, no framing (clickjacking), no referrer,
  and a Content-Security-Policy (``default-src 'none'`` for API answers; pages set their own).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", API_CSP.encode()),
)


def allowed_hosts_for(bind_host: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The default Host allow-list: localhost names, the bound address, and ``extra`` names.

    A wildcard bind (0.0.0.0) cannot know the names clients will use: unless ``extra`` names them,
    any Host is accepted (such a bind requires API keys, which a rebinding page does not have).
    """
    if bind_host in WILDCARD_BINDS and not extra:
        return ("*",)
    names = [*LOCAL_HOSTS, *extra]
    if bind_host not in WILDCARD_BINDS:
        names.append(bind_host)
    return tuple(dict.fromkeys(_normalise_host(n) for n in names))


def _normalise_host(name: str) -> str:
    name = name.strip().lower().rstrip(".")
    return name[1:-1] if name.startswith("[") and name.endswith("]") else name


def host_name(header: str) -> str:
    """``Host`` header value -> the host name without port (IPv6 brackets removed), lower case."""
    header = header.strip()
    if header.startswith("["):
        return _normalise_host(header[: header.find("]") + 1])
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return _normalise_host(header)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class WebPolicy:
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")  # ("*",): any Host
    cors_origins: tuple[str, ...] = ()  # origins allowed to POST cross-site (the CORS allow-list)

    def host_allowed(self, host_header: str | None) -> bool:
        if "*" in self.allowed_hosts:
            return True
        return bool(host_header) and host_name(host_header) in self.allowed_hosts

    def cross_site_refusal(self, headers: dict[bytes, bytes]) -> str | None:
        """Why a state-changing browser request is refused, or None when it is same-origin or not from a browser."""
        origin = headers.get(b"origin", b"").decode("latin-1").strip()
        if origin and origin in self.cors_origins:
            return None
        fetch_site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
        if fetch_site and fetch_site not in ("same-origin", "none"):
            return f"cross-site request refused (Sec-Fetch-Site: {fetch_site})"
        if origin:
            host = headers.get(b"host", b"").decode("latin-1")
            parts = urlsplit(origin)
            if origin == "null" or not parts.netloc or parts.netloc.lower() != host.strip().lower():
                return "cross-origin request refused (its Origin is not this service; see --cors-origin)"
        return None


class WebGuardMiddleware:
    """ASGI middleware: Host allow-list (400), cross-site POST refusal (403), security headers."""

    def __init__(self, app, policy: WebPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not self.policy.host_allowed(host):
            hint = "" if _is_ip(host_name(host or "-")) else f"; to serve this name start crrg serve with --allowed-host {host_name(host)}"
            return await _answer(send, 400, f"Host header {host[:100]!r} is not one of this service's names{hint}"[:300])
        if scope["method"] in UNSAFE_METHODS and (reason := self.policy.cross_site_refusal(headers)):
            return await _answer(send, 403, reason)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})
