"""Stats slots under concurrent writers in forked children: the supervisor never reads a torn one."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time

import xxhash

from shm import Publisher, Subscriber
from tests.e2e.helpers_shm import fork


def _payload(i: int) -> bytes:
    # Self-checking and of varying length: a torn read cannot pass the digest check.
    body = str(i).encode() * (1 + i % 900)
    return xxhash.xxh3_64_digest(body) + body


def test_the_supervisor_never_sees_torn_stats(name: str, pub: Publisher):
    fd = pub.open_slot(2)
    go_r, go_w = os.pipe()

    def writer() -> None:
        sub = Subscriber(name, 2, fd)
        os.close(go_w)
        i = 0
        while not select.select([go_r], [], [], 0)[0]:
            for _ in range(100):
                i += 1
                sub.publish_stats(_payload(i))

    pid = fork(writer)
    try:
        os.close(go_r)
        seen = set()
        stop = time.monotonic() + 10.0  # normally a fraction of a second
        while len(seen) < 500 and time.monotonic() < stop:
            data = pub.stats(2)
            if data:
                digest, body = data[:8], data[8:]
                assert xxhash.xxh3_64_digest(body) == digest
                seen.add(digest)
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        pid = 0
        assert len(seen) >= 500
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
