"""The acceptor hands bare non-blocking sockets to parked, reused handler greenlets; a handler
that raises is reported and the worker goes on; closing the acceptor ends the parked ones.

Run by ``test_worker_accept.py`` as ``python -m tests.e2e.programs.accept_handlers``, in a fresh
interpreter (gevent never runs inside the pytest process); it prints ``ok`` and exits 0, or
fails with the assertion that broke.
"""

from _socket import socket as RawSocket

import gevent
from gevent import getcurrent, socket

from tests.helpers import listener
from workers import accept

lst, port = listener()
seen = []


def handler(sock, addr):
    assert type(sock) is RawSocket and sock.getblocking() is False, sock
    assert addr[0] == "127.0.0.1", addr
    seen.append(getcurrent())  # the object, not its id: ids of dead greenlets recur
    data = b""
    while not data.endswith(b"\n"):
        try:
            data += sock.recv(100)
        except BlockingIOError:
            socket.wait_read(sock.fileno(), 5)
    if data == b"boom\n":
        raise RuntimeError("handler failed")
    if data.startswith(b"c"):
        gevent.sleep(0.1)  # keep the concurrent clients' handlers busy together
    sock.send(data.upper())
    sock.close()


acc = accept.Acceptor(lst, handler, accept.Load())
acc.start()


def client(msg):
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(msg)
    out = c.recv(100)
    c.close()
    return out


for i in range(20):  # one at a time: one handler greenlet serves them all
    assert client(b"hi %d\n" % i) == b"HI %d\n" % i
assert len({id(g) for g in seen}) == 1, seen
assert len(acc.idle) == 1

assert client(b"boom\n") == b""  # the handler raised: the client sees a close
assert client(b"after\n") == b"AFTER\n"  # and the acceptor goes on

# Concurrent clients need several handlers; no more than IDLE_MAX stay parked.
accept.IDLE_MAX = 3
gs = [gevent.spawn(client, b"c%d\n" % i) for i in range(8)]
gevent.joinall(gs, timeout=10)
assert [g.value for g in gs] == [b"C%d\n" % i for i in range(8)]
assert len({id(g) for g in seen[-8:]}) == 8  # eight handlers at once
assert len(acc.idle) == 3, len(acc.idle)

parked = list(acc.idle)
acc.close()
gevent.sleep(0.01)
assert all(g.dead for g in parked), parked
print("ok")
