"""A finished connection's objects are freed by reference counting, not by the cyclic gc.

httptools parsers hold bound methods of their protocol object (``ClientReader``, ``UpConn``),
which holds the parser: left alone, every closed connection leaves a cycle — reader, parser,
stream, queue, requests — for the gc to find. With Connection: close traffic that meant a
collection every few dozen connections. The script serves close and keep-alive clients
through the real acceptor and connection handler, forwarding to an upstream that sometimes
closes its side, with the gc disabled, and then asks the gc what it would have had to free.
"""

from __future__ import annotations

from tests.e2e.helpers_worker import run_program


def test_closed_connections_leave_no_reference_cycles() -> None:
    run_program("conn_gc")
