"""shm.buckets: the rate-limit reaction-state segment — GCRA decisions on a real POSIX shm
segment (clock given explicitly), bounded size, expiry reuse, identity of a limit, header
checks. Cross-process exactness is in tests/e2e/test_buckets_procs.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import posix_ipc  # type: ignore[import-not-found]
import pytest

from shm import buckets, names
from shm.errors import ShmError
from tests.helpers import unique_instance

MS = 1_000_000
LIMIT = b"route:api rate=10/s burst=3"


@pytest.fixture
def instance() -> Iterator[str]:
    name = unique_instance()
    yield name
    buckets.unlink(name)


def test_an_idle_key_gets_its_burst_then_one_per_interval(instance: str) -> None:
    buckets.create(instance, keys=64, mode=0o600, gid=None)
    with buckets.attach(instance) as b:
        t = 10**12
        got = [b.take(LIMIT, b"10.0.0.1", 100 * MS, 3, t) for _ in range(4)]
        assert [v.allowed for v in got] == [True, True, True, False]
        assert [v.remaining for v in got[:3]] == [2, 1, 0]
        assert got[3].retry_after_ns == 100 * MS and got[3].tracked
        assert not b.take(LIMIT, b"10.0.0.1", 100 * MS, 3, t + 99 * MS).allowed
        assert b.take(LIMIT, b"10.0.0.1", 100 * MS, 3, t + 100 * MS).allowed
        assert not b.take(LIMIT, b"10.0.0.1", 100 * MS, 3, t + 100 * MS).allowed
        # another key has its own bucket
        assert b.take(LIMIT, b"10.0.0.2", 100 * MS, 3, t).allowed
        # after burst × interval of silence the key is back to a full burst
        later = t + 100 * MS + 300 * MS
        assert [b.take(LIMIT, b"10.0.0.1", 100 * MS, 3, later).allowed for _ in range(4)] == [
            True,
            True,
            True,
            False,
        ]


def test_the_delayed_mode_waits_one_interval_per_request_of_the_burst(instance: str) -> None:
    """``wait_ns`` spaces an allowed burst at the rate (the first at once); ``reset_ns`` is
    when the whole burst is back."""
    buckets.create(instance, keys=64, mode=0o600, gid=None)
    with buckets.attach(instance) as b:
        t = 10**12
        got = [b.take(LIMIT, b"k", 100 * MS, 3, t) for _ in range(4)]
        assert [v.wait_ns for v in got[:3]] == [0, 100 * MS, 200 * MS]
        assert [v.reset_ns for v in got] == [100 * MS, 200 * MS, 300 * MS, 300 * MS]
        assert not got[3].allowed and got[3].wait_ns == 0
        assert not b.take(LIMIT, b"k", 100 * MS, 3, t + 50 * MS).allowed  # queue still full
        v = b.take(LIMIT, b"k", 100 * MS, 3, t + 100 * MS)  # one interval on: one more place
        assert v.allowed and v.wait_ns == 200 * MS


def test_a_segment_another_user_owns_is_refused(instance: str) -> None:
    buckets.create(instance, keys=8, mode=0o600, gid=None)
    os.chown(f"/dev/shm/pavis.{instance}.rl", 65534, 65534)  # nobody's now
    if os.stat(f"/dev/shm/pavis.{instance}.rl").st_uid != 65534:
        pytest.skip("needs root to give the segment away")
    with pytest.raises(ShmError) as caught:
        buckets.attach(instance)
    assert caught.value.reason == "hostile"


def test_a_rejection_does_not_consume(instance: str) -> None:
    buckets.create(instance, keys=8, mode=0o600, gid=None)
    with buckets.attach(instance) as b:
        t = 10**12
        assert b.take(LIMIT, b"k", 100 * MS, 1, t).allowed
        for _ in range(50):  # hammering while limited does not push the next slot later
            assert not b.take(LIMIT, b"k", 100 * MS, 1, t + 50 * MS).allowed
        assert b.take(LIMIT, b"k", 100 * MS, 1, t + 100 * MS).allowed


def test_a_changed_limit_starts_fresh_an_unchanged_one_keeps_its_state(instance: str) -> None:
    buckets.create(instance, keys=64, mode=0o600, gid=None)
    t = 10**12
    with buckets.attach(instance) as b:
        assert b.take(LIMIT, b"k", 100 * MS, 1, t).allowed
    with buckets.attach(instance) as b:  # a new generation attaches again: same state
        assert not b.take(LIMIT, b"k", 100 * MS, 1, t).allowed
        assert b.take(b"route:api rate=20/s burst=1", b"k", 50 * MS, 1, t).allowed


def test_a_full_bucket_lets_requests_through_untracked_and_counts_them(instance: str) -> None:
    buckets.create(instance, keys=2, mode=0o600, gid=None, ways=2)
    with buckets.attach(instance) as b:
        assert b.keys == 2  # one bucket of two ways: every key lands in it
        t = 10**12
        assert b.take(LIMIT, b"a", 100 * MS, 1, t).tracked
        assert b.take(LIMIT, b"b", 100 * MS, 1, t).tracked
        v = b.take(LIMIT, b"c", 100 * MS, 1, t)
        assert v.allowed and not v.tracked
        assert b.take(LIMIT, b"c", 100 * MS, 1, t).allowed  # still untracked: fails open
        assert b.counters() == (2, 0)
        # once a's state has expired its slot is reused: c is tracked (and limited)
        later = t + 100 * MS
        assert b.take(LIMIT, b"c", 100 * MS, 1, later).tracked
        assert not b.take(LIMIT, b"c", 100 * MS, 1, later).allowed
        assert b.counters() == (2, 1)


def test_the_size_is_bounded_and_rounded_to_whole_buckets(instance: str) -> None:
    buckets.create(instance, keys=1000, mode=0o600, gid=None)
    with buckets.attach(instance) as b:
        assert b.keys == 1024 and b.buckets == 128
        assert os.fstat(b.fd).st_size == buckets.size(128, 8)
    with pytest.raises(ShmError) as err:
        buckets.create(unique_instance(), keys=0, mode=0o600, gid=None)
    assert err.value.reason == "bad_size"


def test_attach_names_what_is_wrong(instance: str) -> None:
    with pytest.raises(ShmError) as err:
        buckets.attach(instance)
    assert err.value.reason == "missing"
    mem = posix_ipc.SharedMemory(names.buckets(instance), posix_ipc.O_CREX, mode=0o600)
    try:
        os.ftruncate(mem.fd, 4096)
        os.pwrite(mem.fd, b"NOTRL000", 0)
    finally:
        mem.close_fd()
    with pytest.raises(ShmError) as err:
        buckets.attach(instance)
    assert err.value.reason == "bad_magic"
    buckets.unlink(instance)
    buckets.create(instance, keys=64, mode=0o600, gid=None)
    mem = posix_ipc.SharedMemory(names.buckets(instance))
    try:
        os.ftruncate(mem.fd, buckets.HEADER_SIZE + 16)  # cut short
    finally:
        mem.close_fd()
    with pytest.raises(ShmError) as err:
        buckets.attach(instance)
    assert err.value.reason == "truncated"


def test_create_is_exclusive_and_unlink_says_whether_it_was_there(instance: str) -> None:
    buckets.create(instance, keys=8, mode=0o600, gid=None)
    with pytest.raises(posix_ipc.ExistentialError):
        buckets.create(instance, keys=8, mode=0o600, gid=None)
    assert buckets.unlink(instance) and not buckets.unlink(instance)
