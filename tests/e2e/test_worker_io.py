"""workers.io deadlines, in a subprocess (gevent never runs inside the pytest process).

A wait past its deadline raises TimeoutError within one watchdog tick; completed waits leave
nothing armed; data, EOF and large sends behave like plain sockets.
"""

from __future__ import annotations

import textwrap

from tests.e2e.helpers_worker import run_gevent_script

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
    run_gevent_script(SCRIPT)


SOON = textwrap.dedent(
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
    """
)


def test_send_soon_batches_writes_until_the_loop_runs() -> None:
    run_gevent_script(SOON)
