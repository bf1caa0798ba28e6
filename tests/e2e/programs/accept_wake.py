"""A worker that fills up wakes the one standing by for it through its eventfd.

Run by ``test_worker_accept.py`` as ``python -m tests.e2e.programs.accept_wake``, in a fresh
interpreter (gevent never runs inside the pytest process); it prints ``ok`` and exits 0, or
fails with the assertion that broke.
"""

import os
import time

import gevent
from gevent import socket

from shm.board import LoadBoard
from tests.helpers import listener
from workers import accept

accept.STANDBY_S = 30.0  # only a wake-up can end this stand-by within the test
lst, port = listener()
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
