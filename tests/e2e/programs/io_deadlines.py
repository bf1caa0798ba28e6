"""workers.io deadlines: a wait past its deadline raises TimeoutError within one watchdog tick;
completed waits leave nothing armed; data, EOF and large sends behave like plain sockets.

Run by ``test_worker_io.py`` as ``python -m tests.e2e.programs.io_deadlines``, in a fresh
interpreter (gevent never runs inside the pytest process); it prints ``ok`` and exits 0, or
fails with the assertion that broke.
"""

import time

import gevent
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
