"""Generations in one process: a real store in a temp dir, real shm under a unique name, and
(where a flip needs acknowledging) a Subscriber in a thread standing in for a worker.

No worker process and no compile child: sources are sealed artifacts (reload verifies an
artifact file in-process), fleet-style bytes go through ``apply``.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import CodeType, FrameType, FunctionType, MethodType, ModuleType

import msgspec
import pytest
import xxhash

from pavis.artifact import MAGIC, Head, LazyModel, read, seal, verify
from pavis.artifact.format import _HEADER
from pavis.compiler import compile_text
from pavis.errors import ControlError, WaitTimeout
from pavis.schema import FORMAT_VERSION, Model, Route, RouteIndex, VirtualHost
from pavis.store import ACCEPTED, REJECTED, UNCHANGED, Store
from pavis.supervisor.generations import Generations
from shm import Subscriber

SHM = "/dev/shm"


def artifact(body: str, port: int = 18080) -> bytes:
    config = f"""
version: 1
listeners: [{{address: "127.0.0.1:{port}"}}]
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - {{match: {{prefix: /}}, direct: {{status: 200, body: "{body}"}}}}
"""
    return seal(compile_text(config, "yaml", "<test>"))


A, B, C = artifact("a"), artifact("b"), artifact("c")


class World:
    """One Generations over a fresh store and instance name; ``live`` lists acking slots."""

    def __init__(self, state: Path) -> None:
        self.name = f"u{os.getpid()}x{uuid.uuid4().hex[:8]}"
        self.state = state
        self.live: list[int] = []
        self.stopping = False
        self.store = Store(state)
        self.gens = Generations(
            self.store,
            workers=2,
            boot_id="unit",
            live=lambda: list(self.live),
            stopping=lambda: self.stopping,
        )
        self.gens.open(self.name, str(state))

    def boot(self, data: bytes = A) -> None:
        _, model = read(data)
        self.gens.boot(data, "boot.pvs", model, self.store.put(data))
        self.gens.record_boot()

    def entries(self) -> list[str]:
        return [e for e in os.listdir(SHM) if e.startswith(f"pavis.{self.name}.")]


@pytest.fixture
def world() -> Iterator[World]:
    state = Path(tempfile.mkdtemp(prefix="pavis-gens-"))
    w = World(state)
    try:
        yield w
    finally:
        w.gens.close()
        for entry in w.entries():  # a failed test must not leave segments behind
            os.unlink(f"{SHM}/{entry}")
        shutil.rmtree(state)


def worker(
    w: World, slot: int, decide: Callable[[int], str | None]
) -> tuple[threading.Thread, threading.Event]:
    """A stand-in worker in slot ``slot``: acks the current generation, or rejects it when
    ``decide(generation)`` gives a reason, or ignores it when that is "ignore"."""
    assert w.gens.publisher is not None
    sub = Subscriber(w.name, slot, w.gens.publisher.open_slot(slot))
    done = threading.Event()

    def run() -> None:
        seen = 0
        while not done.is_set():
            sub.heartbeat(0)
            gen = sub.current()
            if gen and gen != seen:
                why = decide(gen)
                if why is None:
                    with sub.open(gen) as seg:
                        sub.ack(gen, verify(seg.data).digest)  # what a worker checked
                elif why != "ignore":
                    sub.reject(gen, why)
                seen = gen
            time.sleep(0.005)
        sub.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    w.live.append(slot)
    return thread, done


def last(w: World) -> tuple[str, str, int]:
    e = w.store.history()[-1]
    return e.op, e.outcome, e.generation


# ---------------------------------------------------------------------------- apply (fleet)


def test_apply_flips_and_records_the_origin(world: World) -> None:
    world.boot()
    answer = world.gens.apply(B, source="etcd revision 7", origin="fleet")
    assert answer["outcome"] == ACCEPTED and answer["generation"] == 2
    assert world.gens.current is not None and world.gens.current.source == "etcd revision 7"
    assert world.gens.publisher is not None and world.gens.publisher.current == 2
    assert last(world) == ("fleet", ACCEPTED, 2)
    assert world.store.last_known_good() == answer["checksum"]
    assert world.gens.history.outcomes == {ACCEPTED: 1}


def test_apply_of_the_current_bytes_is_unchanged(world: World) -> None:
    world.boot()
    answer = world.gens.apply(A, source="etcd revision 8")
    assert answer["outcome"] == UNCHANGED and answer["generation"] == 1
    assert last(world) == ("fleet", UNCHANGED, 1)


def test_apply_of_broken_bytes_is_refused_and_recorded(world: World) -> None:
    world.boot()
    broken = bytearray(B)
    broken[-1] ^= 1
    with pytest.raises(ControlError, match="checksum"):
        world.gens.apply(bytes(broken), source="etcd revision 9")
    assert world.gens.current is not None and world.gens.current.number == 1
    assert last(world) == ("fleet", REJECTED, 0)


def test_apply_that_moves_a_listener_is_refused(world: World) -> None:
    world.boot()
    with pytest.raises(ControlError, match="listener"):
        world.gens.apply(artifact("a", port=18081), source="moved")
    assert world.gens.current is not None and world.gens.current.number == 1


def test_changes_are_refused_once_stopping(world: World) -> None:
    world.boot()
    world.stopping = True
    with pytest.raises(ControlError, match="stopping"):
        world.gens.apply(B, source="late")


# ---------------------------------------------------------------------------- reload, rollback


def test_reload_of_an_artifact_file_then_of_the_same_bytes(world: World) -> None:
    world.boot()
    path = world.state / "b.pvs"
    path.write_bytes(B)
    first = world.gens.reload(str(path), wait=True, timeout=1.0)
    assert first["outcome"] == ACCEPTED and first["source_digest"]
    again = world.gens.reload(str(path), wait=True, timeout=1.0)
    assert again["outcome"] == UNCHANGED and "not recompiled" in again["message"]
    assert [e.op for e in world.store.history()] == ["boot", "reload", "reload"]


def test_reload_without_a_path_names_the_problem(world: World) -> None:
    world.boot()
    with pytest.raises(ControlError, match="no config path"):
        world.gens.reload(None, wait=True, timeout=1.0)


def test_rollback_flips_to_the_retained_generation_without_republishing(world: World) -> None:
    world.boot()
    world.gens.apply(B, source="b")
    answer = world.gens.rollback(None, wait=True, timeout=1.0)
    assert answer["outcome"] == ACCEPTED and answer["generation"] == 1
    assert sorted(world.gens.retained) == [1, 2]
    world.gens.apply(C, source="c")  # generation 3; 2 is neither current nor previous: gone
    assert sorted(world.gens.retained) == [1, 3]
    by_number = world.gens.rollback("2", wait=True, timeout=1.0)  # found in the history
    assert by_number["checksum"] == world.store.put(B) and by_number["generation"] == 4


def test_rollback_is_resolved_and_read_before_the_lock(world: World) -> None:
    """A rollback to a checksum the store lacks is refused while another change holds the
    lock: resolving and reading the target does not wait for it."""
    world.boot()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with world.gens.lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        t0 = time.monotonic()
        with pytest.raises(ControlError):
            world.gens.rollback("ffffffffffff", wait=True, timeout=1.0)
        assert time.monotonic() - t0 < 5  # refused without the lock, not after it
    finally:
        release.set()
        holder.join()


# ---------------------------------------------------------------------------- acknowledgements


def test_a_rejecting_worker_flips_every_worker_back(world: World) -> None:
    world.boot()
    thread, done = worker(world, 0, lambda gen: "bad generation" if gen == 2 else None)
    try:
        with pytest.raises(ControlError, match="flipped back to generation 1"):
            world.gens.apply(B, source="b", timeout=5.0)
        assert world.gens.current is not None and world.gens.current.number == 1
        assert world.gens.publisher is not None and world.gens.publisher.current == 1
        assert last(world) == ("fleet", REJECTED, 2)
    finally:
        done.set()
        thread.join()


def test_a_silent_worker_times_the_flip_out(world: World) -> None:
    world.boot()
    thread, done = worker(world, 0, lambda gen: "ignore" if gen == 2 else None)
    try:
        with pytest.raises(WaitTimeout):
            world.gens.apply(B, source="b", timeout=0.3)
        assert world.gens.current is not None and world.gens.current.number == 1
    finally:
        done.set()
        thread.join()


def test_an_acking_worker_gets_the_answer_before_the_disk_write(world: World) -> None:
    world.boot()
    thread, done = worker(world, 0, lambda gen: None)
    answers: list[dict[str, object]] = []
    try:
        answer = world.gens.apply(B, source="b", wait=False, respond=_Reply(answers))
        assert answers and answers[0]["outcome"] == "activated"
        assert answer["outcome"] == ACCEPTED and answer["generation"] == 2
    finally:
        done.set()
        thread.join()


class _Reply:
    """A respond callable whose client never hangs up (the control socket's is ``Reply``)."""

    def __init__(self, into: list[dict[str, object]]) -> None:
        self.into = into

    def __call__(self, answer: dict[str, object]) -> None:
        self.into.append(answer)

    def gone(self) -> bool:
        return False


# ---------------------------------------------------------------------------- what is kept


_CODE = (type, ModuleType, FunctionType, MethodType, CodeType, FrameType)


def _reachable(root: object) -> Iterator[object]:
    """The data reachable from ``root`` (not through functions or modules, which lead to
    everything; a ``gc=False`` Struct is reached, not looked into: enough to find a model)."""
    seen = {id(root)}
    stack = [root]
    while stack:
        obj = stack.pop()
        yield obj
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and not isinstance(ref, _CODE):
                seen.add(id(ref))
                stack.append(ref)


def test_the_supervisor_keeps_the_head_of_each_generation_never_its_routes(world: World) -> None:
    # A supervisor that kept the decoded model of every generation still in shm grew by a
    # whole route table per reload; it keeps their heads (listeners, admin, limits) only.
    world.boot()
    world.gens.apply(B, source="b")
    path = world.state / "c.pvs"
    path.write_bytes(C)
    world.gens.reload(str(path), wait=True, timeout=1.0)
    world.gens.rollback(None, wait=True, timeout=1.0)
    assert len(world.gens.retained) >= 2
    for gen in [world.gens.current, *world.gens.retained.values()]:
        assert gen is not None and isinstance(gen.head, Head)
    held = {type(o) for o in _reachable([world.gens.current, world.gens.retained])}
    assert not held & {Model, LazyModel, Route, VirtualHost, RouteIndex}, held


def _with_bad_route(data: bytes) -> bytes:
    """``data`` resealed (a valid checksum) with its route's name an integer."""
    _, model = read(data)
    route = msgspec.structs.replace(model.routes[0], name=7)  # type: ignore[arg-type]
    payload = msgspec.msgpack.encode(msgspec.structs.replace(model, routes=(route,)))
    digest = xxhash.xxh3_128_digest(payload)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, 0, 1, bytes(7), len(payload), digest, bytes(24)) + (
        payload
    )


def test_bytes_whose_routes_do_not_decode_are_refused_though_only_the_head_is_kept(
    world: World,
) -> None:
    world.boot()
    bad = _with_bad_route(B)
    with pytest.raises(ControlError, match="does not decode to the model: route 0"):
        world.gens.apply(bad, source="etcd revision 10")
    path = world.state / "bad.pvs"
    path.write_bytes(bad)
    with pytest.raises(ControlError, match="does not decode"):
        world.gens.reload(str(path), wait=True, timeout=1.0)
    assert world.gens.current is not None and world.gens.current.number == 1
    assert last(world) == ("reload", REJECTED, 0)
