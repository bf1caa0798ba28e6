"""shm in one process (plus a few short-lived forks): the API contract, permissions, retention,
acknowledgement outcomes, notification and the sequence locks under concurrent writers.

Real segments under /dev/shm with a unique instance name per test, all unlinked at the end.
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import threading
import time

import posix_ipc
import pytest
import xxhash

from shm import (
    AckTimeout,
    InstanceBusy,
    Publisher,
    Segment,
    ShmError,
    SlotInfo,
    Subscriber,
    WorkerRejected,
)
from tests.helpers import SHM, shm_entries

NOBODY = 65534


def mode_of(instance: str, entry: str) -> tuple[int, int]:
    st = os.stat(f"{SHM}/pavis.{instance}.{entry}")
    return st.st_mode & 0o777, st.st_gid


# ---------------------------------------------------------------------------- the basic flip


def test_publish_activate_open_ack_round_trip(name: str, pub: Publisher):
    assert pub.current == 0 and shm_entries(name) == {"ctl"}
    fd = pub.open_slot(0)
    sub = Subscriber(name, 0, fd)
    assert sub.current() == 0
    generation = pub.publish(b"artifact bytes")
    assert generation == 1 and shm_entries(name) == {"ctl", "1"}
    assert sub.current() == 0  # published is not current
    pub.activate(generation)
    assert pub.current == sub.current() == 1 and sub.generations() == (1, 0)
    assert select.select([sub.fileno()], [], [], 0)[0]  # told at once
    sub.clear()
    assert not select.select([sub.fileno()], [], [], 0)[0]
    with sub.open(generation) as seg:
        assert isinstance(seg, Segment) and seg.generation == 1
        assert bytes(seg.data) == b"artifact bytes"
        assert seg.digest == xxhash.xxh3_128_digest(b"artifact bytes")
        sub.ack(1, b"D" * 16)
    sub.heartbeat(requests=42)
    pub.wait_acked(1, timeout=1)
    (info,) = pub.slots()
    assert isinstance(info, SlotInfo)
    assert (info.slot, info.pid, info.generation, info.digest) == (0, os.getpid(), 1, b"D" * 16)
    assert info.requests == 42 and abs(info.heartbeat - time.time()) < 60
    assert (info.rejected_generation, info.reason) == (0, "")
    sub.close()


def test_connection_counts_per_slot(name: str, pub: Publisher):
    """Each worker's open-connection count: one word per slot, written by its worker alone
    and read by the others (accept balancing); NO_WORKER while a slot has no worker. The
    word after it is the worker's accepted total, zero until a worker accepts."""
    from shm import control

    ctl = pub._ctl
    no = control.NO_WORKER
    assert [control.read_conns(ctl, i) for i in range(4)] == [no] * 4
    fd0, fd2 = pub.open_slot(0), pub.open_slot(2)
    a, b = Subscriber(name, 0, fd0), Subscriber(name, 2, fd2)
    board_a, board_b = a.load_board(), b.load_board()
    assert board_a.counts[0] == board_b.counts[2] == 0  # attaching counts zero
    assert 0 in board_b.others and 2 in board_a.others and 0 not in board_a.others
    assert len(board_a.others) == len(board_b.others) == 3
    board_a.counts[0] = 7
    board_b.counts[2] = 3
    board_a.accepted[0] = 9
    assert [control.read_conns(ctl, i) for i in range(4)] == [7, no, 3, no]
    assert [control.read_accepted(ctl, i) for i in range(4)] == [9, 0, 0, 0]
    assert min(board_a.counts[i] for i in board_a.others) == 3  # what worker 0 compares itself with
    # Seqlocked slot writes (heartbeat, ack) leave the word alone.
    a.heartbeat(requests=5)
    a.ack(1, b"D" * 16)
    assert control.read_conns(ctl, 0) == 7 and control.read_accepted(ctl, 0) == 9
    a.close()  # releases the view: the mapping really closes
    assert a._ctl.closed
    pub.close_slot(0)
    assert control.read_conns(ctl, 0) == no and control.read_accepted(ctl, 0) == 0
    # One wake-up eventfd per slot, kept across workers, closed with the Publisher.
    assert len(pub.wake_fds) == 4
    os.eventfd_write(pub.wake_fds[2], 1)
    assert os.eventfd_read(pub.wake_fds[2]) == 1
    assert min(board_b.counts[i] for i in board_b.others) == no
    b.close()


def test_generations_are_never_reused_and_empty_data_is_fine(pub: Publisher):
    generations = [pub.publish(b"") for _ in range(3)]
    assert generations == [1, 2, 3]
    pub.collect()
    assert pub.publish(b"x") == 4


def test_writes_through_the_worker_mapping_fail(name: str, pub: Publisher):
    pub.activate(pub.publish(b"immutable"))
    sub = Subscriber(name, 0, pub.open_slot(0))
    seg = sub.open(1)
    assert seg.data.readonly
    with pytest.raises(TypeError):
        seg.data[0] = 0
    with pytest.raises(TypeError):
        seg.data.obj[70] = 0  # the mmap itself is PROT_READ
    with pytest.raises(TypeError):
        seg.data.cast("B")[0] = 0
    assert bytes(seg.data) == b"immutable"
    seg.close()
    sub.close()


def test_segment_close_leaves_outstanding_views_readable(name: str, pub: Publisher):
    pub.activate(pub.publish(b"0123456789"))
    sub = Subscriber(name, 0, pub.open_slot(0))
    seg = sub.open(1)
    view = seg.data[2:5]  # like a msgspec.Raw pinning the mapping
    seg.close()
    assert bytes(view) == b"234"
    view.release()
    sub.close()


# ---------------------------------------------------------------------------- verification


def _rewrite(instance: str, generation: int, offset: int, data: bytes) -> None:
    mem = posix_ipc.SharedMemory(f"/pavis.{instance}.{generation}")
    with mmap.mmap(mem.fd, mem.size) as m:
        m[offset : offset + len(data)] = data
    mem.close_fd()


@pytest.mark.parametrize(
    ("offset", "data", "reason"),
    [
        (64, b"X", "checksum_mismatch"),
        (32, bytes(16), "checksum_mismatch"),
        (0, b"NOTMAGIC", "bad_magic"),
        (8, struct.pack("<I", 9), "unsupported_version"),
        (16, struct.pack("<Q", 7), "wrong_generation"),
        (24, struct.pack("<Q", 5), "truncated"),
    ],
)
def test_a_damaged_segment_is_never_handed_out(
    name: str, pub: Publisher, offset: int, data: bytes, reason: str
):
    generation = pub.publish(b"a perfectly good payload")
    _rewrite(name, generation, offset, data)
    sub = Subscriber(name, 0, pub.open_slot(0))
    with pytest.raises(ShmError) as err:
        sub.open(generation)
    assert err.value.reason == reason
    sub.close()


def test_opening_a_missing_generation_or_control_block(name: str, pub: Publisher):
    sub = Subscriber(name, 0, pub.open_slot(0))
    with pytest.raises(ShmError) as err:
        sub.open(99)
    assert err.value.reason == "missing"
    with pytest.raises(ShmError) as err:
        Subscriber(name + "-none", 0, sub.fileno())
    assert err.value.reason == "missing"
    with pytest.raises(ShmError) as err:
        Subscriber(name, 4, sub.fileno())
    assert err.value.reason == "bad_slot"
    sub.close()


# ---------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_modes_are_explicit_whatever_the_umask(name: str, umask: int):
    old = os.umask(umask)
    try:
        with Publisher(name) as p:
            p.publish(b"x")
            assert {e: mode_of(name, e)[0] for e in shm_entries(name)} == {
                "ctl": 0o600,
                "1": 0o600,
            }
        for mode in (0o600, 0o640):
            with Publisher(name, mode=mode, gid=NOBODY) as p:
                p.publish(b"x")
                assert {mode_of(name, e) for e in shm_entries(name)} == {(0o640, NOBODY)}
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------- liveness lock


def test_a_second_supervisor_is_refused_while_the_first_lives(name: str, pub: Publisher):
    with pytest.raises(InstanceBusy) as err:
        Publisher(name)
    assert err.value.pid == os.getpid()
    assert shm_entries(name) == {"ctl"}  # the refused one touched nothing


def test_a_second_supervisor_with_another_lock_dir_is_refused_too(
    name: str, pub: Publisher, tmp_path
):
    # Its lock is free (another directory), but the live control block maps to a live owner.
    with pytest.raises(InstanceBusy) as err:
        Publisher(name, lock_dir=str(tmp_path / "elsewhere"))
    assert err.value.pid == os.getpid()
    assert shm_entries(name) == {"ctl"}


def test_a_lock_dir_others_can_write_is_refused(name: str, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(ShmError) as err:
        Publisher(name, lock_dir=str(shared))
    assert err.value.reason == "unsafe_lock_dir" and "writable by it alone" in str(err.value)
    assert shm_entries(name) == set()


def test_leftovers_are_reclaimed_and_numbering_continues(name: str):
    p = Publisher(name)
    for _ in range(3):
        p.activate(p.publish(b"x"))
    p.close(unlink=False)
    assert shm_entries(name) == {"ctl", "1", "2", "3"}
    # A stray segment from an even older run counts too.
    with open(f"{SHM}/pavis.{name}.17", "wb"):
        pass
    with Publisher(name) as q:
        assert shm_entries(name) == {"ctl"}
        assert q.current == 0
        assert q.publish(b"y") == 18
    assert shm_entries(name) == set()


def test_numbering_continues_after_a_control_block_of_the_previous_layout(name: str):
    """Upgrading pavis must not restart generation numbers: a layout-2 control block left by
    the previous version still gives its high-water mark (the header is unchanged)."""
    from shm import control

    p = Publisher(name)
    p.activate(p.publish(b"x"))
    p.activate(p.publish(b"x"))
    p.close(unlink=False)
    with open(f"{SHM}/pavis.{name}.ctl", "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", 2))
    with Publisher(name) as q:
        assert q.publish(b"y") == 3
        assert struct.unpack_from("<I", q._ctl, 8)[0] == control.VERSION


def test_reclaim_matches_the_instance_name_exactly(name: str):
    with Publisher(name + "b") as neighbour:
        neighbour.publish(b"n")
        with Publisher(name) as p:
            p.publish(b"p")
            assert shm_entries(name + "b") == {"ctl", "1"}
            assert shm_entries(name) == {"ctl", "1"}


@pytest.mark.parametrize("bad", ["", "a.b", "a/b", "x" * 201, "ä"])
def test_instance_names_are_checked(bad: str):
    with pytest.raises(ShmError) as err:
        Publisher(bad)
    assert err.value.reason == "bad_name"


# ---------------------------------------------------------------------------- retention


def test_rollback_retention_and_collect(name: str, pub: Publisher):
    g1, g2, g3 = (pub.publish(bytes([i])) for i in range(3))
    for g in (g1, g2, g3):
        pub.activate(g)
    assert (pub.current, pub.previous) == (g3, g2)
    assert pub.collect() == [g1]
    assert pub.retained() == [g2, g3]
    pub.activate(g2)  # rollback
    assert (pub.current, pub.previous) == (g2, g3)
    assert pub.collect() == []
    with pytest.raises(ShmError) as err:
        pub.activate(g1)
    assert err.value.reason == "unknown_generation"


def test_collect_spares_a_generation_a_worker_still_serves(name: str, pub: Publisher):
    sub = Subscriber(name, 0, pub.open_slot(0))
    gens = [pub.publish(bytes([i])) for i in range(4)]
    pub.activate(gens[0])
    sub.ack(gens[0], bytes(16))
    for g in gens[1:]:
        pub.activate(g)
    assert pub.collect() == [gens[1]]
    assert pub.retained() == [gens[0], gens[2], gens[3]]
    pub.close_slot(0)  # the worker is gone: its generation is no longer pinned
    assert pub.collect() == [gens[0]]
    sub.close()


# ---------------------------------------------------------------------------- acknowledgements


def test_wait_acked_names_every_missing_worker(name: str, pub: Publisher):
    pub.open_slot(1)  # never attached: pid 0
    sub = Subscriber(name, 2, pub.open_slot(2))
    g = pub.publish(b"x")
    pub.activate(g)
    with pytest.raises(AckTimeout) as err:
        pub.wait_acked(g, timeout=0.05)
    assert err.value.missing == [(1, 0), (2, os.getpid())]
    assert err.value.generation == g
    sub.ack(g, bytes(16))
    pub.wait_acked(g, timeout=0.05, slots=[2])
    pub.close_slot(1)
    pub.wait_acked(g, timeout=0.05)
    sub.close()


def test_wait_acked_raises_at_once_on_a_rejection(name: str, pub: Publisher):
    sub = Subscriber(name, 0, pub.open_slot(0))
    g = pub.publish(b"x")
    pub.activate(g)
    sub.reject(g, "decode_failed: " + "é" * 100)
    started = time.monotonic()
    with pytest.raises(WorkerRejected) as err:
        pub.wait_acked(g, timeout=30)
    assert time.monotonic() - started < 10
    assert (err.value.slot, err.value.pid, err.value.generation) == (0, os.getpid(), g)
    # Cut to 120 bytes on a character boundary.
    assert (
        err.value.reason == ("decode_failed: " + "é" * 52) and len(err.value.reason.encode()) == 119
    )
    assert pub.slots()[0].reason == err.value.reason
    sub.close()


def test_a_live_writer_paused_mid_update_is_waited_for(name: str, pub: Publisher):
    """On a loaded box the supervisor can be descheduled between its two sequence bumps for
    longer than a dead writer is given: as long as it lives, readers wait instead of failing."""
    sub = Subscriber(name, 0, pub.open_slot(0))
    pub.activate(pub.publish(b"x"))
    mem = posix_ipc.SharedMemory(f"/pavis.{name}.ctl")
    with mmap.mmap(mem.fd, mem.size) as m:
        (seq,) = struct.unpack_from("<Q", m, 16)
        struct.pack_into("<Q", m, 16, seq + 1)  # "mid-update" by this (live) process
        resume = threading.Timer(0.4, lambda: struct.pack_into("<Q", m, 16, seq + 2))
        started = time.monotonic()
        resume.start()
        try:
            assert sub.current() == 1
        finally:
            resume.join()
        assert time.monotonic() - started >= 0.35  # it waited for the writer, not a timeout
    mem.close_fd()
    sub.close()


# ---------------------------------------------------------------------------- notification


def test_notification_survives_a_full_pipe(name: str, pub: Publisher):
    sub = Subscriber(name, 0, pub.open_slot(0))
    g = pub.publish(b"x")
    for _ in range(70_000):  # more bytes than a pipe holds: activate must not fail or block
        pub.activate(g)
    assert select.select([sub.fileno()], [], [], 0)[0]
    sub.clear()
    assert not select.select([sub.fileno()], [], [], 0)[0]
    sub.close()


# ---------------------------------------------------------------------------- sequence locks


def test_wake_fds_close_with_the_publisher(name: str) -> None:
    with Publisher(name, slots=2) as p:
        fds = p.wake_fds
        assert len(fds) == 2
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
