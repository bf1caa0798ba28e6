"""shm across forked children: permissions seen by another user, a forked copy of the publisher, workers that die mid-flip, and the sequence locks under writers in other processes.

Real segments under /dev/shm with a unique instance name per test, all unlinked at the end; every child is killed and reaped by pid.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import shutil
import struct
import tempfile
import time
from collections.abc import Callable

import posix_ipc
import pytest
import xxhash

from shm import (
    Publisher,
    ShmError,
    Subscriber,
)
from tests.e2e.helpers_shm import exit_code, fork
from tests.helpers import SHM, shm_entries

NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
@pytest.mark.parametrize("group", [None, NOBODY])
def test_another_user_cannot_open_segments_or_control_block(
    name: str, procs: list[int], group: int | None
):
    mode = 0o600 if group is None else 0o640
    with Publisher(name, slots=1, mode=mode, gid=group) as p:
        p.activate(p.publish(b"secret"))
        fd = p.open_slot(0)

        def stranger() -> None:
            os.setgroups([])
            os.setgid(NOBODY if group is not None else NOBODY - 1)
            os.setuid(NOBODY)
            if group is None:
                for path in (f"/pavis.{name}.1", f"/pavis.{name}.ctl"):
                    with pytest.raises(posix_ipc.PermissionsError):
                        posix_ipc.SharedMemory(path, read_only=True)
                with pytest.raises(ShmError) as err:
                    Subscriber(name, 0, fd)
                assert err.value.reason == "permission"
                with pytest.raises(PermissionError):
                    open(f"{SHM}/pavis.{name}.1", "rb")  # noqa: SIM115
            else:
                # The configured group may read a generation, never write the control block.
                mem = posix_ipc.SharedMemory(f"/pavis.{name}.1", read_only=True)
                mem.close_fd()
                with pytest.raises(posix_ipc.PermissionsError):
                    posix_ipc.SharedMemory(f"/pavis.{name}.ctl")

        pid = fork(stranger)
        procs.append(pid)
        assert exit_code(pid) == 0
        procs.remove(pid)


def test_a_forked_copy_of_the_publisher_is_inert(name: str, pub: Publisher, procs: list[int]):
    pub.activate(pub.publish(b"x"))

    def child() -> None:
        with pytest.raises(ShmError):
            pub.publish(b"y")
        pub.close()  # must not unlink the parent's objects

    pid = fork(child)
    procs.append(pid)
    assert exit_code(pid) == 0
    procs.remove(pid)
    assert shm_entries(name) == {"ctl", "1"}


def test_a_worker_that_died_mid_flip_is_not_waited_for(name: str, pub: Publisher, procs: list[int]):
    fds = [pub.open_slot(slot) for slot in range(2)]
    g = pub.publish(b"x")
    pub.activate(g)

    def attach_then_die(slot: int) -> Callable[[], None]:
        return lambda: Subscriber(name, slot, fds[slot]).heartbeat(0)

    zombie = fork(attach_then_die(0))
    procs.append(zombie)
    reaped = fork(attach_then_die(1))
    assert exit_code(reaped) == 0
    deadline = time.monotonic() + 30
    while pub.slots()[0].pid != zombie:  # attached, then exited; left unreaped on purpose
        assert time.monotonic() < deadline
        time.sleep(0.001)
    pub.wait_acked(g, timeout=5)


def _dead_pid(procs: list[int]) -> int:
    pid = fork(lambda: None)
    assert exit_code(pid) == 0
    return pid


def test_a_writer_killed_mid_update_does_not_hang_readers(
    name: str, pub: Publisher, procs: list[int]
):
    dead = _dead_pid(procs)
    sub = Subscriber(name, 0, pub.open_slot(0))
    mem = posix_ipc.SharedMemory(f"/pavis.{name}.ctl")
    with mmap.mmap(mem.fd, mem.size) as m:
        # Slot 0 left mid-update by a worker that died: its pid, an odd sequence.
        struct.pack_into("<q", m, 64 + 16, dead)
        struct.pack_into("<Q", m, 64, 7)
        info = pub.slots()[0]
        assert not info.consistent
        sub.ack(3, bytes(16))  # a new writer of the slot just carries on
        assert pub.slots()[0].consistent and pub.slots()[0].generation == 3
        # The header left mid-update by a supervisor that died.
        struct.pack_into("<q", m, 48, dead)
        struct.pack_into("<Q", m, 16, 9)
        with pytest.raises(ShmError) as err:
            sub.current()
        assert err.value.reason == "torn"
    mem.close_fd()
    sub.close()


def test_readers_never_see_a_torn_generation_pair(name: str, pub: Publisher, procs: list[int]):
    gens = [pub.publish(bytes([i])) for i in range(3)]
    for g in gens:
        pub.activate(g)
    valid = {(gens[i], gens[i - 1]) for i in range(3)}
    results = []
    for slot in range(3):
        fd = pub.open_slot(slot)
        r, w = os.pipe()

        def reader(slot: int = slot, fd: int = fd, w: int = w) -> None:
            sub = Subscriber(name, slot, fd)
            reads = torn = 0
            stop = time.monotonic() + 1.0
            while time.monotonic() < stop:
                for _ in range(1000):
                    reads += 1
                    torn += sub.generations() not in valid
            os.write(w, f"{reads} {torn}".encode())

        procs.append(fork(reader))
        os.close(w)
        results.append(r)
    flips = 0
    while select.select(results, [], [], 0)[0] == []:
        pub.activate(gens[flips % 3])
        flips += 1
    for r in results:
        select.select([r], [], [], 10)
        report = os.read(r, 100)
        assert report, "a reader process failed: its traceback is in the captured stderr"
        reads, torn = (int(x) for x in report.split())
        os.close(r)
        assert reads > 1000 and torn == 0
    assert flips > 100


def test_the_supervisor_never_sees_a_torn_slot(name: str, pub: Publisher, procs: list[int]):
    fd = pub.open_slot(0)
    go_r, go_w = os.pipe()

    def acker() -> None:
        sub = Subscriber(name, 0, fd)
        os.close(go_w)
        g = 0
        while not select.select([go_r], [], [], 0)[0]:
            for _ in range(200):
                g += 1
                sub.ack(g, xxhash.xxh3_128_digest(str(g).encode()))

    pid = fork(acker)
    procs.append(pid)
    os.close(go_r)
    seen = set()
    stop = time.monotonic() + 10.0  # normally a fraction of a second; more on a loaded box
    while len(seen) < 1000 and time.monotonic() < stop:
        info = pub.slots()[0]
        if info.generation:
            assert info.digest == xxhash.xxh3_128_digest(str(info.generation).encode())
            seen.add(info.generation)
    os.close(go_w)
    assert exit_code(pid) == 0
    procs.remove(pid)
    assert len(seen) >= 1000


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_another_users_leftovers_are_left_alone_unopened(name: str, procs: list[int]):
    with Publisher(name):
        pass
    with open(f"{SHM}/pavis.{name}.lock", "wb"), open(f"{SHM}/pavis.{name}.7", "wb") as f:
        f.write(b"root's")  # root's leftovers: another user may neither use nor remove them
    lock_dir = f"{tempfile.gettempdir()}/pavis-{NOBODY}"
    made = not os.path.exists(lock_dir)

    def stranger() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        with Publisher(name) as p:
            assert sorted(p.hostile) == [(f"pavis.{name}.7", 0), (f"pavis.{name}.lock", 0)]
            assert p.publish(b"x") == 8  # 7 is taken, and never reused
            assert p.retained() == [8]

    try:
        pid = fork(stranger)
        procs.append(pid)
        assert exit_code(pid) == 0
        procs.remove(pid)
        assert shm_entries(name) == {"lock", "7"}  # the stranger removed its own objects only
        with open(f"{SHM}/pavis.{name}.7", "rb") as f:
            assert f.read() == b"root's"
    finally:
        for entry in ("lock", "7"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{SHM}/pavis.{name}.{entry}")
        if made:
            shutil.rmtree(lock_dir, ignore_errors=True)
