"""shm.buckets across real processes: N forked processes enforce one limit, not N× it, and a
process killed while holding a bucket lock does not wedge the others."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Iterator

import pytest

from shm import buckets
from tests.helpers import kill_and_reap, unique_instance

LIMIT = b"route:api"
PROCS = 4


@pytest.fixture
def instance() -> Iterator[str]:
    name = unique_instance()
    buckets.create(name, keys=256, mode=0o600, gid=None)
    yield name
    buckets.unlink(name)


def _hammer(instance: str, takes: int, interval_ns: int, burst: int, until: float) -> list[int]:
    """Fork PROCS children that each take ``takes`` times for one key (or until the
    monotonic deadline ``until``); the allowed count of each."""
    pids: list[int] = []
    reads: list[int] = []
    go_r, go_w = os.pipe()  # the children start together: contention is the point
    try:
        for _ in range(PROCS):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: attach on its own, as a worker does
                code = 1
                try:
                    os.close(r)
                    allowed = 0
                    with buckets.attach(instance) as b:
                        os.read(go_r, 1)
                        for _ in range(takes):
                            if until and time.monotonic() >= until:
                                break
                            allowed += b.take(LIMIT, b"client", interval_ns, burst).allowed
                    os.write(w, str(allowed).encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(w)
            pids.append(pid)
            reads.append(r)
        os.write(go_w, b"g" * PROCS)
        counts = []
        for r in reads:
            chunks = b""
            while chunk := os.read(r, 64):
                chunks += chunk
            counts.append(int(chunks))
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        pids.clear()
        return counts
    finally:
        for fd in (*reads, go_r, go_w):
            os.close(fd)
        kill_and_reap(pids)


def test_processes_share_one_burst_exactly(instance: str) -> None:
    # One hour per token: in the test's lifetime only the burst can be allowed, in all.
    counts = _hammer(instance, takes=3000, interval_ns=3600 * 10**9, burst=8000, until=0.0)
    assert sum(counts) == 8000, counts
    assert min(counts) > 0, counts  # every process took part


def test_processes_share_one_rate(instance: str) -> None:
    interval = 10 * 10**6  # 100/s
    start = time.monotonic()
    counts = _hammer(instance, takes=10**9, interval_ns=interval, burst=5, until=start + 0.6)
    elapsed = time.monotonic() - start
    # burst + one per interval of the run (the children start after ``start``): never N×.
    assert 5 <= sum(counts) <= 5 + int(elapsed / 0.01) + 1, (counts, elapsed)
    assert sum(counts) >= 5 + int(0.6 / 0.01) * 0.8, counts  # and the rate is not starved


def test_a_killed_lock_holder_does_not_wedge_the_others(instance: str) -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            with buckets.attach(instance) as b:
                for byte in range(b.stripes + 1):  # every bucket lock and the counters'
                    fcntl.lockf(b.fd, fcntl.LOCK_EX, 1, byte)
                os.write(w, b"held")
                time.sleep(60)
        finally:
            os._exit(0)
    try:
        os.close(w)
        assert os.read(r, 4) == b"held"
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pid = 0
        with buckets.attach(instance) as b:
            assert b.take(LIMIT, b"client", 10**9, 1).allowed
    finally:
        os.close(r)
        if pid:
            kill_and_reap([pid])
