"""A wake-up takes one connection, and more only while this worker is the least loaded.

Run by ``test_worker_accept.py`` as ``python -m tests.e2e.programs.accept_batch``, in a fresh
interpreter (gevent never runs inside the pytest process); it prints ``ok`` and exits 0, or
fails with the assertion that broke.
"""

import gevent
from gevent import socket

from shm.board import LoadBoard
from tests.helpers import listener
from workers import accept

lst, port = listener()
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
