"""shm with real forked subscriber processes: many flips, corrupted segments, a killed supervisor.

Children are plain ``os.fork`` processes running a select() loop on the notify descriptor plus a
slow poll — what a worker does, without gevent. Every child is stopped by pid; every object is
removed by the run's unique instance prefix.
"""

from __future__ import annotations

import ctypes
import faulthandler
import mmap
import os
import select
import signal
import time
from collections.abc import Iterator

import posix_ipc
import pytest
import xxhash

from shm import Publisher, ShmError, Subscriber, WorkerRejected
from tests.e2e.helpers_shm import fork
from tests.helpers import shm_entries

ACK_TIMEOUT = 20.0


def payload(generation_seed: int, size: int = 4096) -> bytes:
    head = f"payload {generation_seed} ".encode()
    return (head * (size // len(head) + 1))[:size]


def digest(data: bytes | memoryview) -> bytes:
    return xxhash.xxh3_128_digest(data)


def vm_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def subscriber_loop(
    instance: str, slot: int, notify_fd: int, cmd_fd: int = -1, resp_fd: int = -1
) -> None:
    """A worker without HTTP: follow flips, ack what verifies, reject what does not.

    On b"?" from ``cmd_fd`` it answers "<generation> <xxh3 of its mapped bytes>\\n" on
    ``resp_fd`` — read through its own mapping, so it proves the mapping still works.
    """
    sub = Subscriber(instance, slot, notify_fd)
    served = rejected = 0
    seg = None
    watch = [notify_fd] + ([cmd_fd] if cmd_fd >= 0 else [])
    while True:
        ready, _, _ = select.select(watch, [], [], 0.2)  # notification, or the slow poll
        if cmd_fd in ready:
            cmd = os.read(cmd_fd, 1)
            if cmd in (b"", b"q"):
                return
            answer = f"{served} {digest(seg.data).hex() if seg else '-'}\n"
            os.write(resp_fd, answer.encode())
        sub.clear()
        try:
            generation = sub.current()
        except ShmError:
            continue  # control block gone or torn: keep serving what we have
        if not generation or generation in (served, rejected):
            continue
        try:
            new = sub.open(generation)
        except ShmError as exc:
            sub.reject(generation, str(exc))
            rejected = generation
            continue
        old, seg, served = seg, new, generation
        sub.ack(generation, digest(seg.data))
        if old is not None:
            old.close()


def start_subscribers(pub: Publisher, instance: str, count: int, procs: list[int]) -> list[int]:
    pids = []
    for slot in range(count):
        fd = pub.open_slot(slot)
        pid = fork(lambda slot=slot, fd=fd: subscriber_loop(instance, slot, fd))
        procs.append(pid)
        pids.append(pid)
    return pids


def test_eight_subscribers_follow_1000_flips_forwards_and_backwards(name: str, procs: list[int]):
    with Publisher(name, slots=8) as pub:
        expected = {}
        first = pub.publish(payload(0))
        expected[first] = digest(payload(0))
        pub.activate(first)
        pids = start_subscribers(pub, name, 8, procs)
        pub.wait_acked(first, ACK_TIMEOUT)
        rss_early: dict[int, int] = {}
        rollbacks = 0
        for flip in range(1, 1001):
            if flip % 4 == 0:
                target = pub.previous  # rollback: the same flip, to the retained older one
                rollbacks += 1
            else:
                data = payload(flip)
                target = pub.publish(data)
                expected[target] = digest(data)
            pub.activate(target)
            pub.wait_acked(target, ACK_TIMEOUT)
            served = {(s.generation, s.digest) for s in pub.slots()}
            assert served == {(target, expected[target])}
            pub.collect()
            if flip == 100:
                rss_early = {pid: vm_rss_kb(pid) for pid in pids}
        assert rollbacks == 250
        assert [s.pid for s in pub.slots()] == pids
        assert shm_entries(name) == {"ctl", str(pub.current), str(pub.previous)}
        assert sorted(pub.retained()) == sorted([pub.current, pub.previous])
        growth = {pid: vm_rss_kb(pid) - rss_early[pid] for pid in pids}
        assert max(growth.values()) < 2048, growth
    assert shm_entries(name) == set()


@pytest.mark.parametrize("damage", ["garbage_data", "wrong_checksum", "torn_header", "truncated"])
def test_subscribers_reject_a_damaged_generation_and_keep_the_previous(
    name: str, procs: list[int], damage: str
):
    with Publisher(name, slots=2) as pub:
        good = pub.publish(payload(1))
        pub.activate(good)
        start_subscribers(pub, name, 2, procs)
        pub.wait_acked(good, ACK_TIMEOUT)
        bad = pub.publish(payload(2))
        mem = posix_ipc.SharedMemory(f"/pavis.{name}.{bad}")
        with mmap.mmap(mem.fd, mem.size) as m:
            if damage == "garbage_data":
                m[100:200] = os.urandom(100)
            elif damage == "wrong_checksum":
                m[32:48] = bytes(16)  # the segment's recorded xxh3-128
            elif damage == "torn_header":
                m[0:64] = bytes(64)  # as if the publisher died before writing the header
        if damage == "truncated":
            os.ftruncate(mem.fd, mem.size // 2)
        mem.close_fd()
        pub.activate(bad)
        with pytest.raises(WorkerRejected) as err:
            pub.wait_acked(bad, ACK_TIMEOUT)
        reason = {
            "garbage_data": "checksum_mismatch",
            "wrong_checksum": "checksum_mismatch",
            "torn_header": "bad_magic",
            "truncated": "truncated",
        }[damage]
        assert reason in err.value.reason
        # Both workers get there; each reports the reason and still serves the good one.
        deadline = time.monotonic() + ACK_TIMEOUT
        while not all(s.rejected_generation == bad for s in pub.slots()):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        for info in pub.slots():
            assert info.generation == good and info.digest == digest(payload(1))
            assert reason in info.reason
        pub.activate(good)  # rolling back is the same flip
        pub.wait_acked(good, ACK_TIMEOUT)


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Adopt orphaned grandchildren, so a killed supervisor's workers can be reaped by pid."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36
    assert libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0
    yield
    libc.prctl(pr_set_child_subreaper, 0, 0, 0, 0)


def test_sigkilled_supervisor_leaves_workers_serving_and_is_reclaimed(
    name: str, procs: list[int], subreaper: None
):
    data1 = payload(1, 65536)
    report_r, report_w = os.pipe()
    pipes = [(os.pipe(), os.pipe()) for _ in range(2)]  # (cmd r/w, resp r/w) per worker

    def supervisor() -> None:
        pub = Publisher(name, slots=2)
        generation = pub.publish(data1)
        pub.activate(generation)
        pids = []
        for slot, ((cmd_r, _), (_, resp_w)) in enumerate(pipes):
            fd = pub.open_slot(slot)
            pids.append(
                fork(lambda s=slot, f=fd, c=cmd_r, r=resp_w: subscriber_loop(name, s, f, c, r))
            )
        pub.wait_acked(generation, ACK_TIMEOUT)
        os.write(report_w, f"{generation} {pids[0]} {pids[1]}\n".encode())
        time.sleep(600)  # until SIGKILL

    sup = fork(supervisor)
    procs.append(sup)
    os.close(report_w)
    with os.fdopen(report_r) as report:
        first, *workers = (int(x) for x in report.readline().split())
    procs.extend(workers)

    def ask(i: int) -> str:
        (_, cmd_w), (resp_r, _) = pipes[i]
        os.write(cmd_w, b"?")
        ready, _, _ = select.select([resp_r], [], [], ACK_TIMEOUT)
        assert ready, f"worker {i} did not answer"
        return os.read(resp_r, 100).decode().strip()

    os.kill(sup, signal.SIGKILL)
    os.waitpid(sup, 0)
    assert shm_entries(name) == {"ctl", str(first)}  # a dead supervisor leaves it all
    served = f"{first} {digest(data1).hex()}"
    assert [ask(0), ask(1)] == [served, served]

    with Publisher(name, slots=2) as pub:  # the dead one's lock is free: no InstanceBusy
        assert shm_entries(name) == {"ctl"}  # leftovers reclaimed
        assert [ask(0), ask(1)] == [served, served]  # unlinked, still mapped, still readable
        generation = pub.publish(payload(2))
        assert generation > first  # names are never reused, even across supervisors
        pub.activate(generation)
        start_subscribers(pub, name, 1, procs)
        pub.wait_acked(generation, ACK_TIMEOUT)
        assert shm_entries(name) == {"ctl", str(generation)}
    for cmd, resp in pipes:
        for fd in (*cmd, *resp):
            os.close(fd)


def test_a_raw_write_through_the_worker_mapping_is_a_segfault(name: str, procs: list[int]):
    with Publisher(name, slots=1) as pub:
        generation = pub.publish(payload(1))
        pub.activate(generation)
        notify = pub.open_slot(0)

        def worker() -> None:
            seg = Subscriber(name, 0, notify).open(generation)
            with open("/proc/self/maps") as f:
                line = next(x for x in f if f"pavis.{name}.{generation}" in x)
            start = int(line.split("-")[0], 16)
            assert "r--s" in line
            faulthandler.disable()  # the crash is the expected outcome, not worth a traceback
            ctypes.memset(start + 64, 0, 1)  # must never get past this line
            assert bytes(seg.data[:1]) == b"\0"

        pid = fork(worker)
        procs.append(pid)
        _, status = os.waitpid(pid, 0)
        procs.remove(pid)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV
