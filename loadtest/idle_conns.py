"""Hold many idle keep-alive client connections open on a proxy, from a process of its own.

    python -m loadtest.idle_conns --port PORT --count 10000

Owns: raising its own RLIMIT_NOFILE, opening ``--count`` connections in batches (each sends
one GET and reads the whole answer, so every connection is an accepted keep-alive connection
the proxy holds between requests, not one waiting in the listen backlog), and the line protocol
its parent drives over stdin/stdout: it prints ``ready N`` once N connections are open; on
``check`` it prints ``open K`` (how many the proxy has not closed); on ``stop`` or end of input
it closes them all and exits.
Must not: send anything after the first exchange on a connection, or reach beyond 127.0.0.1.

A separate process, so that the benchmark's own descriptors and CPU stay out of it.
"""

from __future__ import annotations

import argparse
import resource
import socket
import sys

BATCH = 200  # in flight at once: well under the listeners' backlog (1024)


def raise_limit(count: int) -> None:
    want = count + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError) as exc:
        raise SystemExit(
            f"cannot raise RLIMIT_NOFILE to {want} (hard limit {hard}): {exc}"
        ) from exc


def _read_answer(s: socket.socket) -> None:
    """Read one response with a Content-Length body (the proxies' answers to GET /)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the answer")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed inside the body")
        body += chunk


def open_all(port: int, count: int, path: str) -> list[socket.socket]:
    request = f"GET {path} HTTP/1.1\r\nHost: idle.bench\r\n\r\n".encode()
    conns: list[socket.socket] = []
    try:
        while len(conns) < count:
            batch = [
                socket.create_connection(("127.0.0.1", port), timeout=10)
                for _ in range(min(BATCH, count - len(conns)))
            ]
            conns.extend(batch)
            for s in batch:
                s.sendall(request)
            for s in batch:
                _read_answer(s)
                s.settimeout(None)  # blocking again: ``still_open`` peeks with MSG_DONTWAIT
    except BaseException:
        for s in conns:
            s.close()
        raise
    return conns


def still_open(conns: list[socket.socket]) -> int:
    n = 0
    for s in conns:
        try:
            n += s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            n += 1  # nothing to read: open
        except OSError:
            pass  # reset
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--path", default="/")
    a = ap.parse_args(argv)
    raise_limit(a.count)
    try:
        conns = open_all(a.port, a.count, a.path)
    except OSError as exc:
        print(f"failed {exc}", flush=True)
        return 1
    try:
        print(f"ready {len(conns)}", flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "check":
                print(f"open {still_open(conns)}", flush=True)
            elif cmd == "stop":
                break
    finally:
        for s in conns:
            s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
