"""workers.io's queued writes: they wait for the loop, keep their order, survive close and
shutdown, fail at the next call when the peer is gone, and finish from the hub.

Run by ``test_worker_io.py`` as ``python -m tests.e2e.programs.io_send_soon``, in a fresh
interpreter (gevent never runs inside the pytest process); it prints ``ok`` and exits 0, or
fails with the assertion that broke.
"""

import socket as stdsocket
import time

import gevent
from gevent import socket

from workers import io


def pair():
    a, b = socket.socketpair()
    return io.Stream(a), b


far = time.monotonic() + 5

# Queued writes wait for the loop: nothing reaches the peer until this greenlet waits,
# then every stream's queued write is out before the loop next blocks.
pairs = [pair() for _ in range(3)]
for i, (st, _) in enumerate(pairs):
    st.send_soon(b"answer %d" % i, far)
for _, peer in pairs:
    peer.setblocking(False)
    try:
        peer.recv(100)
        raise SystemExit("a queued write went out before the loop ran")
    except BlockingIOError:
        pass
    peer.setblocking(True)
assert len(io._soon) == 3
gevent.sleep(0)  # one loop iteration
assert [peer.recv(100) for _, peer in pairs] == [b"answer 0", b"answer 1", b"answer 2"]
assert not io._soon

# Order: a write after a queued one carries it first; a second queued write on the
# same stream is written at once, behind the first.
st, peer = pairs[0]
st.send_soon(b"one,", far)
st.send(b"two,", far)
st.send_soon(b"three,", far)
st.send_soon(b"four", far)
gevent.sleep(0)
got = b""
while len(got) < len(b"one,two,three,four"):
    got += peer.recv(100)
assert got == b"one,two,three,four", got

# close() hands a queued last answer to the kernel before closing.
st, peer = pairs[1]
st.send_soon(b"bye", far)
st.close()
assert peer.recv(100) == b"bye" and peer.recv(100) == b""

# shutdown() (a draining worker ending an idle connection) writes a queued answer first.
a, b = socket.socketpair()
st = io.Stream(a)
st.send_soon(b"last answer", far)
st.shutdown()
assert b.recv(100) == b"last answer" and b.recv(100) == b""
st.close()
b.close()

# A queued write the peer cannot take (it went away) fails at the next call.
st, peer = pairs[2]
peer.close()
st.send_soon(b"lost", far)
gevent.sleep(0)
for call in (lambda: st.recv(far), lambda: st.send(b"x", far)):
    try:
        call()
        raise SystemExit("a failed queued write went unnoticed")
    except BrokenPipeError:
        pass
st.close()

# A queued write the kernel takes only in part is finished from the hub when the socket
# turns writable, while the owner waits for something else.
a, b = socket.socketpair()
a.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_SNDBUF, 4096)
b.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, 4096)
st = io.Stream(a)
blob = bytes(range(256)) * (io.SOON_MAX // 256)
st.send_soon(blob, far)
gevent.sleep(0)
assert st.out is not None and 0 < len(st.out) < len(blob), "expected a partial write"
got = []


def drain():
    n = 0
    while n < len(blob):
        got.append(b.recv(65536))
        n += len(got[-1])


g = gevent.spawn(drain)
g.join(5)
assert b"".join(got) == blob and st.out is None
st.close()
b.close()

# close() right after a queued write: the flush writes, then closes — all of it when
# the peer reads, and after CLOSE_FLUSH_S at the latest when it stops reading.
for reads in (True, False):
    a, b = socket.socketpair()
    a.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_SNDBUF, 4096)
    b.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, 4096)
    st = io.Stream(a)
    st.send_soon(blob, far)
    st.close()
    assert a.fileno() >= 0  # not yet: the flush closes it
    if reads:
        got = b""
        while True:
            piece = b.recv(65536)
            if not piece:
                break
            got += piece
        assert got == blob
    else:
        gevent.sleep(0)
        assert a.fileno() >= 0 and st.out, "expected a partial write"
        gevent.sleep(io.CLOSE_FLUSH_S + 3 * io.TICK)
        assert a.fileno() < 0, "a close waiting on a peer that never reads must give up"
    b.close()

for _, peer in pairs:
    peer.close()
print("ok")
