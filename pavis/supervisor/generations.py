"""Generation changes: reload, rollback and apply, the flip, retention and the history.

Owns: the ``Publisher`` (instance lock, published segments), the current generation and
those still in shm, ``lock`` — taken by every mutation of the Publisher, the arbiter's
opening and closing of slots included — and the history entry of every change. A change is
all-or-nothing: every live worker acknowledges it, or every worker flips back.
Must not: fork, reap or signal workers, or parse requests (the arbiter does).

Entry points, each one call from any thread, returning the answer (``outcome``,
``generation``, ``checksum``, ``source``, ``workers``, ``elapsed_ms``, ``load_ms``,
``source_digest``) or raising ``ControlError`` (refused; recorded) or ``WaitTimeout`` (not
acknowledged in time; flipped back):

- ``reload(path, wait, timeout, respond)``: a config or artifact file (``None``:
  ``reload_source``); the bytes the current generation was built from are not recompiled.
- ``rollback(to, wait, timeout, respond)``: the previous accepted generation, or the one
  ``to`` names (a generation number or a checksum prefix), read from the store.
- ``apply(data, source=..., origin="fleet", wait=True, timeout=DEFAULT_WAIT)``: sealed bytes
  from elsewhere; the fleet agent calls ``apply(sealed, source="etcd revision 42")``.
  ``origin`` is the op the history records. Call it from a thread of your own, not from the
  supervisor's loop: a flip waits up to ``timeout`` for the workers.

``respond`` (optional) gets the answer at activation when ``wait`` is False, and tells a
change that its client hung up while it waited for its turn (it is dropped).

Concurrency: sources are read, compiled (in a child process; compiles take turns) and
decoded before ``lock`` is taken; under it a prepared change is checked against the current
generation (``_Change.holds``) and prepared again if a flip in between made it stale.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pavis.artifact import Head, head_of, read_head
from pavis.errors import ControlError, PavisError, WaitTimeout
from pavis.schema import Model
from pavis.store import ACCEPTED, REJECTED, TIMEOUT, UNCHANGED, Store
from pavis.supervisor.control import Respond
from pavis.supervisor.history import History
from pavis.supervisor.notify import monotonic_usec, notify
from pavis.supervisor.reaction import Reaction, reaction_for
from pavis.supervisor.sockets import listeners_changed
from pavis.supervisor.source import build
from pavis.supervisor.source import read as read_file
from shm import AckTimeout, Publisher, ShmError, WorkerRejected

log = logging.getLogger("pavis.supervisor")

DEFAULT_WAIT = 10.0  # seconds for every worker to acknowledge a flip
PRUNE_EVERY = 32  # accepted changes between two prunes of the store


@dataclass(frozen=True)
class Generation:
    """A published generation as the supervisor knows it: its head, never its route table."""

    number: int
    checksum: str
    source: str
    head: Head
    source_digest: str = ""  # of the source bytes it was compiled from; "" = not comparable


def _always(current: Generation | None) -> bool:
    return True


@dataclass(frozen=True)
class _Change:
    """A change made ready outside the lock: the artifact verified and its head decoded
    (``data`` None: the source is the current generation's, nothing to flip)."""

    source: str
    data: bytes | None = None
    checksum: str = ""
    head: Head | None = None
    digest: str = ""  # of the source bytes; "" = unknown (an embedded file may change)
    holds: Callable[[Generation | None], bool] = field(default=_always)


class Generations:
    """The generations of one supervisor (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        workers: int,
        boot_id: str,
        live: Callable[[], list[int]],
        stopping: Callable[[], bool],
        reload_source: str = "",
    ) -> None:
        """``live``: the slots that have a worker process (those asked to acknowledge);
        ``stopping``: True once changes are refused."""
        self.store = store
        self.history = History(store, boot_id)
        self.workers = workers
        self.reload_source = reload_source  # what a reload without a path reads
        self.lock = threading.RLock()
        self.publisher: Publisher | None = None
        self.reaction: Reaction | None = None  # rate-limit buckets, kept across reloads
        self.current: Generation | None = None
        self.retained: dict[int, Generation] = {}  # still in shm
        self._live = live
        self._stopping = stopping
        self._compiling = threading.Lock()

    # ================================================================== boot and close

    def open(self, name: str, lock_dir: str) -> Publisher:
        """Take the instance lock (a second supervisor of ``name`` fails here) and create
        the control block, one slot per worker."""
        self.publisher = Publisher(name, slots=self.workers, lock_dir=lock_dir)
        for entry, uid in self.publisher.hostile:
            log.warning("/dev/shm/%s belongs to uid %d: left alone, never opened", entry, uid)
        return self.publisher

    def boot(self, data: bytes, source: str, model: Head | Model, checksum: str) -> Generation:
        """Publish and activate the first generation (no worker runs yet)."""
        assert self.publisher is not None
        self.reaction = reaction_for(model, self.reaction, self.publisher)
        number = self.publisher.publish(data)
        self.publisher.activate(number)
        gen = Generation(number, checksum, source, head_of(model))
        self.current = self.retained[number] = gen
        return gen

    def record_boot(self) -> None:
        assert self.current is not None
        cur = self.current
        self.history.record("boot", cur.source, ACCEPTED, cur.number, cur.checksum, "")

    def mark_good(self) -> None:
        """The current generation is served by every worker: it is the last-known-good."""
        assert self.current is not None
        self.store.mark_good(self.current.checksum)

    def hold(self, timeout: float) -> bool:
        """Take ``lock`` for good (stop): a flip in progress finishes first, within ``timeout``."""
        return self.lock.acquire(timeout=timeout)

    def close(self) -> None:
        if self.reaction is not None:
            self.reaction.close()
            self.reaction = None
        if self.publisher is not None:
            self.publisher.close(unlink=True)

    def status_line(self) -> str:
        cur = self.current
        if cur is None:
            return "STATUS=booting"
        return f"STATUS=generation {cur.number} checksum {cur.checksum} workers {self.workers}"

    # ================================================================== the entry points

    def reload(
        self, path: str | None, wait: bool, timeout: float, respond: Respond | None = None
    ) -> dict[str, Any]:
        source = path or self.reload_source
        if not source:
            self._check("reload", respond)
            raise self.history.reject(
                "reload",
                "",
                "no config path: this supervisor booted from a stored "
                "artifact whose config file is unknown or gone; give a path",
            )
        return self._change("reload", wait, timeout, respond, lambda: self._prepare(source))

    def rollback(
        self, to: str | None, wait: bool, timeout: float, respond: Respond | None = None
    ) -> dict[str, Any]:
        return self._change("rollback", wait, timeout, respond, lambda: self._prepare_rollback(to))

    def apply(
        self,
        data: bytes,
        *,
        source: str,
        origin: str = "fleet",
        wait: bool = True,
        timeout: float = DEFAULT_WAIT,
        respond: Respond | None = None,
    ) -> dict[str, Any]:
        def prepare() -> _Change:
            try:
                header, head = read_head(data)
            except PavisError as exc:
                raise self.history.reject(origin, source, str(exc)) from None
            return _Change(source, data, header.checksum, head)

        return self._change(origin, wait, timeout, respond, prepare)

    # ================================================================== what they share

    def _change(
        self,
        op: str,
        wait: bool,
        timeout: float,
        respond: Respond | None,
        prepare: Callable[[], _Change],
    ) -> dict[str, Any]:
        """Prepare outside ``lock``, then flip under it; the history reaches the disk after
        the answer and outside ``lock``."""
        self._check(op, respond)
        t0 = time.monotonic()
        while True:
            change = prepare()
            with self.lock:
                self._check(op, respond)
                if not change.holds(self.current):
                    continue  # a flip came in between: prepare again, outside the lock
                notify("RELOADING=1", monotonic_usec())
                try:
                    answer = self._flip(op, change, wait, timeout, respond, t0)
                finally:
                    notify("READY=1", self.status_line())
            break
        self.store.flush()
        return answer

    def _check(self, op: str, respond: Respond | None) -> None:
        if self._stopping():
            raise ControlError("the supervisor is stopping")
        # A request that waited for its turn behind a slow one is dropped if its client gave
        # up: executing it later would surprise whoever retried, or moved on.
        if respond is not None and respond.gone():
            log.warning("%s dropped: its client hung up while it waited for its turn", op)
            raise ControlError(f"{op} dropped: the client hung up before its turn")

    # ================================================================== preparing

    def _prepare(self, source: str) -> _Change:
        """The source read and, unless its bytes are the current generation's, built."""
        try:
            src = read_file(source)

            def built_from_src(gen: Generation | None) -> bool:
                return gen is not None and gen.source_digest == src.digest

            if built_from_src(self.current):
                return _Change(src.path, digest=src.digest, holds=built_from_src)
            with self._compiling:
                built = build(src)
            # A compile child decoded its artifact whole; an artifact file is checked here.
            header, head = read_head(built.data, check=not built.decoded)
        except PavisError as exc:
            raise self.history.reject("reload", source, str(exc), code=exc.code) from None
        # Embedded files (TLS PEM) may change under an unchanged config.
        digest = "" if built.reads_files else src.digest
        return _Change(source, built.data, header.checksum, head, digest)

    def _prepare_rollback(self, to: str | None) -> _Change:
        cur = self.current
        assert cur is not None
        checksum = self.history.target(to, cur.checksum, self._retained_checksum)
        source = f"rollback to {checksum}"
        try:
            data = self.store.get(checksum)
            _, head = read_head(data)
        except PavisError as exc:
            raise self.history.reject("rollback", source, str(exc)) from None
        # "The previous one" is relative to the current generation: resolved again if it moved.
        holds = (
            _always if to is not None else lambda c: c is not None and c.checksum == cur.checksum
        )
        return _Change(source, data, checksum, head, holds=holds)

    def _retained_checksum(self, number: int) -> str | None:
        gen = self.retained.get(number)
        return None if gen is None else gen.checksum

    # ================================================================== the flip

    def _flip(
        self,
        op: str,
        change: _Change,
        wait: bool,
        timeout: float,
        respond: Respond | None,
        t0: float,
    ) -> dict[str, Any]:
        """Make ``change`` current on every worker, or on none (the caller holds ``lock``)."""
        assert self.current is not None and self.publisher is not None
        load_ms = round((time.monotonic() - t0) * 1000, 1)  # compile or read + decode
        old = self.current
        if change.data is None or change.checksum == old.checksum:
            return self._same(op, change, t0, load_ms)
        assert change.head is not None
        data, checksum = change.data, change.checksum
        changed = listeners_changed(old.head, change.head)
        if changed:
            raise self.history.reject(op, change.source, changed, checksum)
        self.store.put(data)
        target = self._publish(op, change)
        self.publisher.activate(target.number)
        self.current = target
        if not wait and respond is not None:
            respond({"ok": True, **self._answer(target, "activated", t0, load_ms)})
        try:
            # Only slots with a live process: a slot waiting for its restart has nobody to ask
            # (its next worker boots on the current generation anyway). No spawn happens while
            # ``lock`` is held, so this set cannot grow during the wait.
            self.publisher.wait_acked(target.number, timeout, slots=self._live())
            self._check_digests(target)
        except (WorkerRejected, AckTimeout, ShmError) as exc:
            self._flip_back(old, timeout)
            outcome = TIMEOUT if isinstance(exc, AckTimeout) else REJECTED
            reason = f"{exc}; every worker flipped back to generation {old.number}"
            self.history.record(op, change.source, outcome, target.number, checksum, reason)
            log.warning("%s %s: %s", op, outcome, reason)
            self._forget_unused()
            if outcome == TIMEOUT:
                raise WaitTimeout(reason) from None
            raise ControlError(reason) from None
        # Visible in memory at once; written to disk by ``_change`` after the answer and
        # outside ``lock`` (fsyncs cost ~10 ms, and the workers already serve it).
        self.store.mark_good(checksum, flush=False)
        self.history.record(op, change.source, ACCEPTED, target.number, checksum, "", flush=False)
        answer = self._answer(target, ACCEPTED, t0, load_ms)
        if respond is not None:
            respond({"ok": True, **answer})
        self._forget_unused()
        log.info(
            "%s accepted: generation %d, checksum %s (%s)",
            op, target.number, checksum, change.source,
        )  # fmt: skip
        return answer

    def _same(self, op: str, change: _Change, t0: float, load_ms: float) -> dict[str, Any]:
        """The answer to a change to what the current generation already serves."""
        gen = self.current
        assert gen is not None
        number = gen.number
        if change.data is None:
            log.info("%s unchanged: %s has the bytes of generation %d", op, change.source, number)
            message = (
                f"{change.source} is unchanged since generation {number} "
                f"(source digest {change.digest}): not recompiled"
            )
        else:
            if change.digest:  # the next reload of these bytes is answered without compiling
                gen = self.current = self.retained[number] = replace(
                    gen, source_digest=change.digest
                )
            message = f"compiled to the checksum generation {number} already serves"
        self.history.record(op, change.source, UNCHANGED, number, gen.checksum, "")
        return {**self._answer(gen, UNCHANGED, t0, load_ms), "message": message}

    def _publish(self, op: str, change: _Change) -> Generation:
        """The generation to activate: one still in shm with the same bytes is flipped to,
        not republished."""
        assert self.publisher is not None
        assert change.data is not None and change.head is not None
        checksum, digest = change.checksum, change.digest
        target = next((g for g in self.retained.values() if g.checksum == checksum), None)
        if target is None or target.number not in self.publisher.retained():
            try:
                self.reaction = reaction_for(change.head, self.reaction, self.publisher)
                number = self.publisher.publish(change.data)
            except ShmError as exc:  # no_space, write_failed: nothing was made current
                raise self.history.reject(op, change.source, str(exc), checksum) from None
            target = Generation(number, checksum, change.source, change.head, digest)
            self.retained[number] = target
        elif digest:
            target = self.retained[target.number] = replace(target, source_digest=digest)
        return target

    def _check_digests(self, target: Generation) -> None:
        assert self.publisher is not None
        want = bytes.fromhex(target.checksum)
        for info in self.publisher.slots():
            if info.pid and info.generation == target.number and info.digest != want:
                raise ShmError(
                    "digest_mismatch",
                    f"slot {info.slot} (pid {info.pid}) acknowledged generation "
                    f"{target.number} with checksum {info.digest.hex()}",
                )

    def _flip_back(self, old: Generation, timeout: float) -> None:
        assert self.publisher is not None
        self.publisher.activate(old.number)
        self.current = old
        try:
            # Workers that never took the new generation are still on the old one; a stuck
            # worker must not hold the answer longer than the caller's own bound.
            self.publisher.wait_acked(old.number, timeout)
        except ShmError as exc:
            log.error("flip back to generation %d incomplete: %s", old.number, exc)

    def _forget_unused(self) -> None:
        """Unlink the segments no worker can need any more; prune the store now and then."""
        assert self.publisher is not None
        self.publisher.collect()
        retained = set(self.publisher.retained())
        for number in list(self.retained):
            if number not in retained:
                del self.retained[number]
        if self.history.outcomes.get(ACCEPTED, 0) % PRUNE_EVERY == 0:
            self.store.prune()

    # ================================================================== answers

    def _answer(self, gen: Generation, outcome: str, t0: float, load_ms: float) -> dict[str, Any]:
        return {
            "outcome": outcome,
            "generation": gen.number,
            "checksum": gen.checksum,
            "source": gen.source,
            "workers": self.workers,
            "elapsed_ms": round((time.monotonic() - t0) * 1000, 1),
            "load_ms": load_ms,
            "source_digest": gen.source_digest,
        }
