"""workers.accept, in a subprocess (gevent never runs inside the pytest process).

Accepted connections are bare non-blocking sockets; handler greenlets are parked and reused
from one connection to the next (a new greenlet per connection costs CPython a fresh
interpreter data stack, an mmap and an munmap), at most IDLE_MAX of them; a handler that
raises does not take the worker down, and closing the acceptor ends the parked handlers.
A wake-up takes one connection, and more only while this worker holds fewer than FILL
connections or no more than the least loaded other worker (plus an eighth, plus one); every
connection is counted while it is open, and every one accepted, in the words other workers
read. A worker leaves connections to the workers in lower slots while one of them holds
fewer than FILL and keeps accepting; when they stop accepting it takes what waits, one
connection after the first STANDBY_S, then twice as many per STANDBY_S while they stay
stalled. A worker that fills up (or retires) wakes the workers after it through their
eventfds, so one standing by joins at once. A worker out of descriptors pauses accepting,
every time it runs out.
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
    from shm.board import LoadBoard
    from workers import accept

    lst = stdsocket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    port = lst.getsockname()[1]
    accept.FILL = 2  # to see the balance rule at small counts
    words = memoryview(bytearray(8 * 6)).cast("Q")
    # Slot i: its count at word 2i, its accepted total at 2i + 1.
    load = accept.Load(LoadBoard(words[::2], words[1::2], 0, [1, 2]))  # slot 0: first in line
    words[2] = accept.NO_WORKER  # a slot without a worker never counts

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
        words[4] = other
        served.clear()
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(pending)]
        gevent.sleep(0.01)  # every connection is in the listen queue
        wakeup()
        taken = load.n
        assert words[0] == taken  # published at once, before any handler ran
        gevent.sleep(0.01)
        assert len(served) == taken
        words[4] = accept.NO_WORKER
        while len(served) < pending:  # take the rest
            wakeup()
        for c in clients:
            c.close()
        gevent.sleep(0.05)
        assert load.n == 0 and words[0] == 0, (load.n, words[0])  # every close uncounted
        return taken

    before = load.accepted
    assert one_wakeup(0, 6) == 2  # another worker holds nothing: up to FILL
    assert one_wakeup(8, 12) == 10  # up to 8 + 1 + 8 // 8
    assert one_wakeup(16, 6) == 6  # well under 16 + 1 + 2: all that is waiting
    assert one_wakeup(accept.NO_WORKER, 20) == accept.ACCEPT_MAX  # alone: a full batch
    assert load.accepted - before == 6 + 12 + 6 + 20 == words[1]  # the total, published
    print("ok")
    """
)


def test_a_wakeup_takes_more_than_one_connection_only_while_this_worker_is_least_loaded() -> None:
    run_gevent_script(BATCH_SCRIPT)


STANDBY_SCRIPT = textwrap.dedent(
    """
    import socket as stdsocket
    import time
    import gevent
    from gevent import socket
    from shm.board import LoadBoard
    from workers import accept

    accept.STANDBY_S = 0.2  # wide margins for a loaded machine
    lst = stdsocket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    port = lst.getsockname()[1]
    # Word 0 and 1: the worker in slot 0 (count, accepted total); 2 and 3: this one, slot 1.
    words = memoryview(bytearray(8 * 4)).cast("Q")
    load = accept.Load(LoadBoard(words[::2], words[1::2], 1, [0]))
    assert load.before == [0]

    def handler(sock, addr):
        socket.wait_read(sock.fileno(), 10)  # until the client closes
        sock.close()

    acc = accept.Acceptor(lst, handler, load)
    acc.start()
    busy = [True]

    def slot0_accepting():  # the worker before this one keeps accepting (other clients)
        while busy[0]:
            words[1] += 1
            gevent.sleep(0.01)

    words[0] = accept.FILL - 1  # room left in slot 0
    feeder = gevent.spawn(slot0_accepting)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    gevent.sleep(0.7)  # more than three stand-bys
    assert load.n == 0, load.n  # all three left to slot 0, which is accepting
    busy[0] = False
    feeder.join()
    t0 = time.monotonic()
    while load.n == 0:
        gevent.sleep(0.005)
    first = time.monotonic() - t0
    assert first < 0.5, first  # slot 0 stalled: the waiting connections are this worker's
    assert load.n == 1, load.n  # one, not the whole queue
    while load.n == 1:
        gevent.sleep(0.005)
    assert load.n == 3, load.n  # still stalled a stand-by later: twice as many, at once

    words[0] = accept.FILL  # slot 0 is full: take at once
    more = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    t0 = time.monotonic()
    while load.n < 5:
        gevent.sleep(0.005)
    assert time.monotonic() - t0 < 0.15, "a full slot 0 did not let this worker accept"

    words[0] = accept.NO_WORKER  # no worker in slot 0: nothing to wait for
    last = [socket.create_connection(("127.0.0.1", port))]
    t0 = time.monotonic()
    while load.n < 6:
        gevent.sleep(0.005)
    assert time.monotonic() - t0 < 0.15

    words[0] = accept.FILL - 1  # room in slot 0 again, and stalled: one at first again
    last += [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    while load.n == 6:
        gevent.sleep(0.005)
    assert load.n == 7, load.n

    load.retire()  # draining: the workers after this one stop waiting for it
    assert words[2] == accept.NO_WORKER and load.counts is None
    for c in clients + more + last:
        c.close()
    gevent.sleep(0.1)
    assert load.n == 0 and words[2] == accept.NO_WORKER  # closes after retire stay private
    acc.close()
    print("ok")
    """
)


def test_a_worker_leaves_connections_to_lower_slots_with_room_until_they_stop_accepting() -> None:
    run_gevent_script(STANDBY_SCRIPT)


WAKE_SCRIPT = textwrap.dedent(
    """
    import os
    import socket as stdsocket
    import time
    import gevent
    from gevent import socket
    from shm.board import LoadBoard
    from workers import accept

    accept.STANDBY_S = 30.0  # only a wake-up can end this stand-by within the test
    lst = stdsocket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    port = lst.getsockname()[1]
    words = memoryview(bytearray(8 * 4)).cast("Q")
    wake = {0: os.eventfd(0, os.EFD_NONBLOCK), 2: os.eventfd(0, os.EFD_NONBLOCK)}
    # slot 0: counted by hand below; slot 1: the acceptor under test
    first = accept.Load(LoadBoard(words[::2], words[1::2], 0, [1]), wake[0], [wake[2]])
    second = accept.Load(LoadBoard(words[::2], words[1::2], 1, [0]), wake[2])
    assert first.after == [wake[2]] and second.after == []

    def handler(sock, addr):
        socket.wait_read(sock.fileno(), 10)
        sock.close()

    acc = accept.Acceptor(lst, handler, second)
    acc.start()
    words[2] = 0
    for _ in range(accept.FILL - 1):
        first.opened()  # slot 0 has room: one left
    c1 = socket.create_connection(("127.0.0.1", port))
    gevent.sleep(0.3)
    assert second.n == 0 and acc.poke.active  # standing by, for the timer or a wake-up
    os.eventfd_write(wake[2], 1)  # a stale wake-up: slot 0 still has room
    gevent.sleep(0.3)
    assert second.n == 0 and acc.poke.active
    t0 = time.monotonic()
    first.opened()  # slot 0 is full: it wakes slot 1
    while second.n == 0:
        assert time.monotonic() - t0 < 5.0, "not woken"
        gevent.sleep(0.005)
    assert not acc.poke.active
    # Slot 0 drops below FILL, slot 1 stands by again; slot 0 retires: slot 1 goes on.
    first.closed()
    c2 = socket.create_connection(("127.0.0.1", port))
    gevent.sleep(0.3)
    assert second.n == 1 and acc.poke.active
    t0 = time.monotonic()
    first.retire()
    while second.n == 1:
        assert time.monotonic() - t0 < 5.0, "not woken by the retirement"
        gevent.sleep(0.005)
    c1.close()
    c2.close()
    acc.close()
    print("ok")
    """
)


def test_a_worker_that_fills_up_wakes_the_one_standing_by_for_it() -> None:
    run_gevent_script(WAKE_SCRIPT)


PAUSE_SCRIPT = textwrap.dedent(
    """
    import os
    import resource
    import socket as stdsocket
    import sys
    import time
    import gevent
    from workers import accept

    lst = stdsocket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    port = lst.getsockname()[1]
    clients = [stdsocket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    acc = accept.Acceptor(lst, lambda sock, addr: sock.close(), accept.Load())
    # No descriptor left for an accepted connection: every accept fails with EMFILE.
    spare = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    try:
        while True:
            spare.append(os.dup(0))
    except OSError:
        pass
    acc.start()
    gevent.sleep(0.55)  # five or six pauses of PAUSE_S, one attempt each
    for fd in spare:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    gevent.sleep(0.3)  # the next attempt after a pause takes the waiting clients
    for c in clients:
        assert c.recv(1) == b""  # accepted (and closed by the handler)
    acc.close()
    print("errors", accept.METRICS.accept_errors, file=sys.stderr)
    print("ok")
    """
)


def test_a_worker_out_of_descriptors_pauses_accepting_every_time() -> None:
    r = run_gevent_script(PAUSE_SCRIPT)
    pauses = int(r.stderr.split("errors ")[-1].split()[0])  # one failed attempt per pause
    assert 3 <= pauses <= 9, r.stderr[-2000:]  # a timer started again must wait again
    assert r.stderr.count("pausing") == 1, r.stderr[-2000:]  # said once, not per attempt
