"""Listener sockets: bound once by the supervisor, before fork, and never closed while it runs.

Owns: binding the artifact's listeners (and the admin address), and deciding whether a new
artifact's listeners differ from the bound ones — such a reload is rejected, because workers
inherit sockets at fork and cannot rebind. Must not: accept connections (workers do).
"""

from __future__ import annotations

import socket

from pavis.artifact import Head
from pavis.errors import PavisError
from pavis.schema import Admin, Listener, Model, ServerTls

BACKLOG = 1024


class BindError(PavisError):
    code = "bind_failed"


def listener_key(model: Head | Model) -> tuple[tuple[str, str, int, bool], ...]:
    """What a running supervisor cannot change: names, addresses, TLS on/off, admin address.

    TLS material (certificates) is per generation data that workers apply; whether a listener
    speaks TLS at all is fixed at boot like its address.
    """
    key = [
        (lst.name, lst.host, lst.port, isinstance(lst.tls, ServerTls)) for lst in model.listeners
    ]
    if isinstance(model.admin, Admin):
        key.append(("<admin>", model.admin.host, model.admin.port, False))
    return tuple(sorted(key))


def listeners_changed(old: Head | Model, new: Head | Model) -> str:
    """'' if ``new`` can be served on ``old``'s sockets, else a reason naming the difference."""
    a, b = listener_key(old), listener_key(new)
    if a == b:
        return ""
    removed = [_fmt(k) for k in a if k not in b]
    added = [_fmt(k) for k in b if k not in a]
    return (
        "listeners cannot change on reload (restart pavis serve instead): "
        f"removed {', '.join(removed) or 'none'}; added {', '.join(added) or 'none'}"
    )


def _fmt(k: tuple[str, str, int, bool]) -> str:
    return f"{k[0]}={k[1]}:{k[2]}{'+tls' if k[3] else ''}"


def bind(host: str, port: int, what: str) -> socket.socket:
    """A listening TCP socket with SO_REUSEADDR and a 1024 backlog."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"{what}: cannot resolve {host!r}: {exc}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise BindError(f"{what}: cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def bind_listeners(listeners: tuple[Listener, ...]) -> dict[str, socket.socket]:
    bound: dict[str, socket.socket] = {}
    try:
        for lst in listeners:
            bound[lst.name] = bind(lst.host, lst.port, f"listener {lst.name!r}")
    except BaseException:
        for s in bound.values():
            s.close()
        raise
    return bound
