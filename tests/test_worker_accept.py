"""workers.accept, in a subprocess (gevent never runs inside the pytest process).

Accepted connections are bare non-blocking sockets; handler greenlets are parked and reused
from one connection to the next (a new greenlet per connection costs CPython a fresh
interpreter data stack, an mmap and an munmap), at most IDLE_MAX of them; a handler that
raises does not take the worker down, and closing the acceptor ends the parked handlers.
A wake-up takes one connection, and more only while this worker holds no more connections
than the least loaded other worker (plus an eighth, plus one); every connection is counted
while it is open, in the word other workers read.
"""

from __future__ import annotations

import textwrap

from tests.helpers_worker import run_gevent_script

SCRIPT = textwrap.dedent(
    """
    import socket as stdsocket
    import gevent
    from gevent import getcurrent, socket
    from _socket import socket as RawSocket
    from workers import accept

    lst = stdsocket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    port = lst.getsockname()[1]
    seen = []

    def handler(sock, addr):
        assert type(sock) is RawSocket and sock.getblocking() is False, sock
        assert addr[0] == "127.0.0.1", addr
        seen.append(getcurrent())  # the object, not its id: ids of dead greenlets recur
        data = b""
        while not data.endswith(b"\\n"):
            try:
                data += sock.recv(100)
            except BlockingIOError:
                socket.wait_read(sock.fileno(), 5)
        if data == b"boom\\n":
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
        assert client(b"hi %d\\n" % i) == b"HI %d\\n" % i
    assert len({id(g) for g in seen}) == 1, seen
    assert len(acc.idle) == 1

    assert client(b"boom\\n") == b""  # the handler raised: the client sees a close
    assert client(b"after\\n") == b"AFTER\\n"  # and the acceptor goes on

    # Concurrent clients need several handlers; no more than IDLE_MAX stay parked.
    accept.IDLE_MAX = 3
    gs = [gevent.spawn(client, b"c%d\\n" % i) for i in range(8)]
    gevent.joinall(gs, timeout=10)
    assert [g.value for g in gs] == [b"C%d\\n" % i for i in range(8)]
    assert len({id(g) for g in seen[-8:]}) == 8  # eight handlers at once
    assert len(acc.idle) == 3, len(acc.idle)

    parked = list(acc.idle)
    acc.close()
    gevent.sleep(0.01)
    assert all(g.dead for g in parked), parked
    print("ok")
    """
)


def test_acceptor() -> None:
    r = run_gevent_script(SCRIPT)
    assert "RuntimeError: handler failed" in r.stderr  # reported, not swallowed


BATCH_SCRIPT = textwrap.dedent(
    """
    import socket as stdsocket
    import gevent
    from gevent import socket
    from workers import accept

    lst = stdsocket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    port = lst.getsockname()[1]
    words = memoryview(bytearray(8 * 4)).cast("Q")
    load = accept.Load(words, 0, [1, 2])
    words[1] = accept.NO_WORKER  # a slot without a worker never counts

    served = []

    def handler(sock, addr):
        served.append(addr)
        socket.wait_read(sock.fileno(), 5)  # until the client closes
        sock.close()

    acc = accept.Acceptor(lst, handler, load)  # not started: wake-ups are made by hand

    def wakeup():  # what the listener's watcher does: call _accept in the hub
        gevent.get_hub().loop.run_callback(acc._accept)
        gevent.sleep(0.01)

    def one_wakeup(other, pending):
        words[2] = other
        served.clear()
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(pending)]
        gevent.sleep(0.01)  # every connection is in the listen queue
        wakeup()
        taken = load.n
        assert words[0] == taken  # published at once, before any handler ran
        gevent.sleep(0.01)
        assert len(served) == taken
        words[2] = accept.NO_WORKER
        while len(served) < pending:  # take the rest
            wakeup()
        for c in clients:
            c.close()
        gevent.sleep(0.05)
        assert load.n == 0 and words[0] == 0, (load.n, words[0])  # every close uncounted
        return taken

    assert one_wakeup(0, 6) == 1  # another worker holds nothing: one, as nginx does
    assert one_wakeup(2, 6) == 3  # up to 2 + 1 + 2 // 8
    assert one_wakeup(16, 6) == 6  # well under 16 + 1 + 2: all that is waiting
    assert one_wakeup(accept.NO_WORKER, 20) == accept.ACCEPT_MAX  # alone: a full batch
    print("ok")
    """
)


def test_a_wakeup_takes_more_than_one_connection_only_while_this_worker_is_least_loaded() -> None:
    run_gevent_script(BATCH_SCRIPT)
