"""Who may connect (contracts 2 and 4): Host (no DNS rebinding), API token, WebSocket and CORS Origins, and
the headers every answer carries; one implementation, over the WSGI environ, for the Flask hooks and
tail_front.py alike. It never builds a response and never reads settings (Gate is given them)."""
from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

LOCAL_NAME = "localhost"
# A loopback literal is always one of our names: a DNS-rebinding page needs a host NAME, and inside a
# container listening on 0.0.0.0 a connection through a published port reaches the container's own address
# while the browser says `Host: 127.0.0.1:<port>`.
LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # bind-all addresses: not a name a client reaches us by


@functools.lru_cache(maxsize=1024)  # pure; every request asks it for the same few names
def _normal(name: str) -> str:
    """One spelling per address: lower case, IPv6 without brackets and compressed."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def own_names(addresses: Iterable[str | None]) -> frozenset[str]:
    """The names of this server: `localhost`, the loopback addresses, and each of its addresses (configured,
    bound, the one this connection reached), wildcards left out."""
    names = {LOCAL_NAME, *LOOPBACK_ADDRESSES}
    for address in addresses:
        if address is not None and address not in _WILDCARDS:
            names.add(_normal(address))
    return frozenset(names)


def split_host(host: str) -> tuple[str, int] | None:
    """`name:port`, `[v6]:port` or `name` (port 80) -> (normal name, port); None when it is malformed."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        name, rest = host[:end + 1], host[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    elif host.count(":") == 1:
        name, port_text = host.split(":")
    elif ":" in host:  # a bare IPv6 address is not a valid Host header
        return None
    else:
        name, port_text = host, None
    if port_text is None:
        port = 80
    elif port_text.isascii() and port_text.isdigit() and len(port_text) <= 5:
        port = int(port_text)
    else:
        return None
    if not name or name == "[]":
        return None
    return _normal(name), port


def host_allowed(host: str | None, names: frozenset[str], port: int) -> bool:
    """The Host header names this server: one of its names, with its real port."""
    parsed = split_host(host) if host else None
    return parsed is not None and parsed[0] in names and parsed[1] == port


def origin_allowed(origin: str | None, names: frozenset[str], port: int, cors_origins: frozenset[str]) -> bool:
    """No Origin (a program, not a browser), one of `cors_origins`, or the server's own http origin."""
    if origin is None or origin in cors_origins:
        return True
    scheme, sep, rest = origin.partition("://")
    if scheme.lower() != "http" or not sep or "/" in rest:
        return False
    return host_allowed(rest, names, port)


def token_matches(expected: str | None, authorization: str | None, query_token: str | None = None) -> bool:
    """True when no token is configured, or the request carries it: `Authorization: Bearer <token>`, else
    `query_token` (the WebSocket's `?token=`, as browsers cannot set headers there; None elsewhere).
    Constant-time comparison."""
    if not expected:
        return True
    given = None
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        given = value.strip()
    else:
        given = query_token
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def local_address(environ) -> str | None:
    """The address this connection reached (one of ours even when bound to 0.0.0.0); None outside a server."""
    sock = environ.get("werkzeug.socket")
    try:
        return sock.getsockname()[0] if sock is not None else None
    except (OSError, IndexError, TypeError):
        return None


CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type"
CORS_MAX_AGE_S = "600"
NO_SNIFF = ("X-Content-Type-Options", "nosniff")  # on every answer: a browser takes each body as its type


@functools.lru_cache(maxsize=64)  # pure; a server has a handful of addresses
def _own_names_of(*addresses: str | None) -> frozenset[str]:
    return own_names(addresses)


@dataclass(frozen=True)
class Gate:
    """The access rules of one app, from its settings: asked with a request's WSGI environ."""

    configured_address: str
    cors_origins: frozenset[str]
    token: str | None

    def _names(self, environ) -> tuple[frozenset[str], int]:
        names = _own_names_of(self.configured_address, environ.get("SERVER_NAME"), local_address(environ))
        return names, int(environ.get("SERVER_PORT") or 80)

    def host_ok(self, environ) -> bool:
        """The Host header names this server (checked before the token and before any upgrade)."""
        names, port = self._names(environ)
        return host_allowed(environ.get("HTTP_HOST"), names, port)

    def websocket_origin_ok(self, environ) -> bool:
        names, port = self._names(environ)
        return origin_allowed(environ.get("HTTP_ORIGIN"), names, port, self.cors_origins)

    def token_ok(self, environ) -> bool:
        """The token by header (a request to a route that needs it; the WebSocket checks its own)."""
        return token_matches(self.token, environ.get("HTTP_AUTHORIZATION"))

    def answer_headers(self, environ) -> list[tuple[str, str]]:
        """The headers added to every answer, in order: CORS (when cors_origins is set: `Vary: Origin`, and
        the allow headers for a listed Origin, the preflight ones for an OPTIONS that asks), then nosniff."""
        out = []
        if self.cors_origins:
            out.append(("Vary", "Origin"))
            origin = environ.get("HTTP_ORIGIN")
            if origin is not None and origin in self.cors_origins:
                out.append(("Access-Control-Allow-Origin", origin))
                method = (environ.get("REQUEST_METHOD") or "GET").upper()
                if method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ:
                    out += [("Access-Control-Allow-Methods", CORS_METHODS),
                            ("Access-Control-Allow-Headers", CORS_HEADERS),
                            ("Access-Control-Max-Age", CORS_MAX_AGE_S)]
        out.append(NO_SNIFF)
        return out
