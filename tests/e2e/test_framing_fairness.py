"""One hostile stream must not starve the other requests on its worker.

An upstream that streams a body the proxy has to work hard on — an endless run of one-byte
chunks, written as fast as the socket takes them — keeps the relay's reads always ready and
its client writes never blocked, so a relay that only yields when I/O would block holds the
worker's loop for as long as the stream lasts. The relay bounds the bytes it moves per turn
of the loop; this test stands a victim request beside such a stream on the same (single)
worker and checks it is answered while the stream still flows.
"""

from __future__ import annotations

import socket
import threading
import time

from tests.e2e.helpers_worker import behind_raw, raw
from tests.e2e.rawupstream import RawConn, ok, path_of

STREAM_S = 6.0  # how long the hostile stream flows
TINY = b"1\r\nx\r\n" * 50_000  # 300 kB of one-byte chunks per write


def stream_or_echo(conn: RawConn) -> None:
    while True:
        req = conn.read_request()
        if path_of(req) != b"/endless":
            conn.send(ok(path_of(req)))
            continue
        conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        end = time.monotonic() + STREAM_S
        while time.monotonic() < end:
            conn.sock.sendall(TINY)
        conn.sock.sendall(b"0\r\n\r\n")
        return


def drain(port: int, got: list[int], done: threading.Event) -> None:
    """The stream's client: reads as fast as it can until the proxy ends the response."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.settimeout(STREAM_S + 10)
        buf = bytearray(1 << 20)
        while True:
            n = s.recv_into(buf)
            if not n:
                break
            got[0] += n
    done.set()


def test_a_fast_hostile_stream_does_not_starve_its_worker() -> None:
    with behind_raw(stream_or_echo) as (w, _up):
        got = [0]
        done = threading.Event()
        reader = threading.Thread(target=drain, args=(w.port, got, done), daemon=True)
        reader.start()
        deadline = time.monotonic() + 5
        while got[0] < 100_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got[0] >= 100_000, "the stream never started flowing"
        waits = []
        for i in range(5):
            t0 = time.monotonic()
            answer = raw(
                w.port,
                b"GET /victim/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % i,
                timeout=STREAM_S + 10,
            )
            waits.append(time.monotonic() - t0)
            assert answer.endswith(b"/victim/%d" % i), answer[:200]
            assert not done.is_set(), "the stream ended before the victims were answered"
        # Starved, a victim waits for the rest of the stream (seconds); served, a few ms on
        # an idle box. The bound is a liveness bound with room for a loaded CI machine.
        assert max(waits) < STREAM_S / 3, waits
        reader.join(STREAM_S + 15)
        assert done.is_set()
