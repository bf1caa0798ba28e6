"""A worker leaves connections to lower slots with room until they stop accepting, then takes
them one after STANDBY_S and twice as many per STANDBY_S while they stay stalled.

Run by ``test_worker_accept.py`` as ``python -m tests.e2e.programs.accept_standby``, in a fresh
interpreter (gevent never runs inside the pytest process); it prints ``ok`` and exits 0, or
fails with the assertion that broke.
"""

import time

import gevent
from gevent import socket

from shm.board import LoadBoard
from tests.helpers import listener
from workers import accept

accept.STANDBY_S = 0.2  # wide margins for a loaded machine
lst, port = listener()
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
