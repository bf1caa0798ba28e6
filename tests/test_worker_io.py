"""workers.io deadlines, in a subprocess (gevent never runs inside the pytest process).

A wait past its deadline raises TimeoutError within one watchdog tick; completed waits leave
nothing armed; data, EOF and large sends behave like plain sockets.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import time
    from gevent import socket
    from workers import io

    a, b = socket.socketpair()
    sa, sb = io.Stream(a), io.Stream(b)

    t0 = time.monotonic()
    try:
        sa.recv(time.monotonic() + 0.2, wait_first=True)
        raise SystemExit("no timeout")
    except TimeoutError:
        waited = time.monotonic() - t0
    assert 0.19 <= waited < 0.2 + 3 * io.TICK, waited
    assert not io._armed, io._armed

    big = b"z" * (4 << 20)  # more than the socket buffers: send must wait for the reader
    import gevent
    got = []
    def reader():
        n = 0
        while n < len(big):
            n += len(sb.recv(time.monotonic() + 5))
        got.append(n)
    g = gevent.spawn(reader)
    sa.send(big, time.monotonic() + 5)
    g.join(5)
    assert got == [len(big)], got
    assert not io._armed

    sa.close()
    assert sb.recv(time.monotonic() + 1) == b""  # EOF
    sb.close()
    print("ok")
    """
)


def test_stream_deadlines_and_eof() -> None:
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
