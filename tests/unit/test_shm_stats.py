"""The per-slot stats area of the control block: opaque bytes from a worker to the supervisor.

Real segments under /dev/shm with a unique instance name per test, all unlinked at the end;
the concurrency test forks a real writer process.
"""

from __future__ import annotations

import mmap
import struct
import time

import posix_ipc
import pytest

from shm import Publisher, Subscriber
from shm.control import HEADER, SLOT, STATS_MAX, STATS_SIZE


def test_stats_round_trip_per_slot_and_reset_with_the_slot(name: str, pub: Publisher):
    subs = [Subscriber(name, slot, pub.open_slot(slot)) for slot in range(2)]
    assert pub.stats(0) == pub.stats(1) == b""
    subs[0].publish_stats(b"first, longer snapshot")
    subs[1].publish_stats(b"\x00" * STATS_MAX)  # the full area is usable
    assert pub.stats(0) == subs[0].stats() == b"first, longer snapshot"
    assert pub.stats(1) == b"\x00" * STATS_MAX
    subs[0].publish_stats(b"short")  # a shorter one replaces it whole: no stale tail
    assert pub.stats(0) == b"short"
    with pytest.raises(ValueError):
        subs[0].publish_stats(b"x" * (STATS_MAX + 1))
    assert pub.stats(0) == b"short"  # a refused write changes nothing
    # The slot's other fields are untouched by stats, and the other way round.
    subs[0].heartbeat(requests=7)
    assert pub.slots()[0].requests == 7 and pub.stats(0) == b"short"
    # A new worker in the slot starts with nothing of its predecessor's.
    subs[0].close()
    pub.close_slot(0)
    assert pub.stats(0) == b""
    sub = Subscriber(name, 0, pub.open_slot(0))
    assert pub.stats(0) == b"" and pub.stats(1) == b"\x00" * STATS_MAX
    for s in (sub, subs[1]):
        s.close()


def test_a_writer_killed_mid_update_leaves_empty_stats_not_torn_ones(name: str, pub: Publisher):
    sub = Subscriber(name, 1, pub.open_slot(1))
    sub.publish_stats(b"good")
    off = HEADER.size + SLOT.size * 4 + STATS_SIZE * 1
    mem = posix_ipc.SharedMemory(f"/pavis.{name}.ctl")
    with mmap.mmap(mem.fd, mem.size) as m:
        (seq,) = struct.unpack_from("<Q", m, off)
        struct.pack_into("<Q", m, off, seq | 1)  # left odd by a dead worker
        t0 = time.monotonic()
        assert pub.stats(1) == b""
        assert time.monotonic() - t0 < 5  # gives up instead of spinning for ever
        sub.publish_stats(b"again")  # the next writer just carries on
        assert pub.stats(1) == b"again"
    mem.close_fd()
    sub.close()
