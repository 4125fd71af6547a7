"""Who may connect (contract section 4): the Host names the server answers to (no DNS rebinding) and the
Origins that may open the WebSocket. Pure rules over header text; it never touches sockets or settings."""
from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

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
