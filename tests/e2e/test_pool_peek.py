"""The last look a pooled connection gets before it is reused: bytes or a close that arrived
since the idle watcher last ran mean it is stale (never handed to the next request)."""

from __future__ import annotations

import socket
from _socket import socket as RawSocket

from workers.pool import _peek_stale
from workers.upstream import UpConn


def _pair() -> tuple[UpConn, socket.socket]:
    ours, theirs = socket.socketpair()
    raw = RawSocket(ours.family, ours.type, ours.proto, fileno=ours.detach())
    raw.setblocking(False)
    return UpConn(raw), theirs


def test_a_quiet_connection_is_not_stale() -> None:
    conn, peer = _pair()
    try:
        assert _peek_stale(conn) is False
        assert _peek_stale(conn) is False  # looking leaves nothing behind
    finally:
        conn.close()
        peer.close()


def test_stray_bytes_make_it_stale_and_stay_unread() -> None:
    conn, peer = _pair()
    try:
        peer.sendall(b"HTTP/1.1 200 OK\r\n")
        assert _peek_stale(conn) is True
        assert conn.stream.raw.recv(64) == b"HTTP/1.1 200 OK\r\n"  # peeked, not consumed
    finally:
        conn.close()
        peer.close()


def test_a_close_makes_it_stale() -> None:
    conn, peer = _pair()
    try:
        peer.close()
        assert _peek_stale(conn) is True
    finally:
        conn.close()
