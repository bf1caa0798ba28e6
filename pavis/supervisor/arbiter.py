"""The supervisor's main loop: boot, signals, worker upkeep, and the reload/rollback flips.

Owns: the order of boot (load → store → lock → bind → publish → fork), the one loop that dispatches
signals (``handle_<signal>``), reaps and tops up workers and checks heartbeats, and the
all-or-nothing generation flip shared by reload and rollback. Must not: import gevent or the
worker runtime, or serve data-plane HTTP.

Concurrency: signal handlers only wake the loop (``signal.set_wakeup_fd``). Control requests
and SIGHUP reloads run in their own threads, serialised by ``self._ops`` — the lock every
mutation of the Publisher (publish, activate, open/close slot, collect) and of the current
generation takes. The loop never blocks on it: it tops up workers only when it is free. A
reload compiles (in a child process) before it takes ``_ops``, so upkeep never waits for a
compile; compiles take turns on ``self._compiling``.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from pavis.artifact import read
from pavis.errors import ControlError, PavisError, WaitTimeout
from pavis.schema import Admin, Model
from pavis.store import ACCEPTED, REJECTED, TIMEOUT, UNCHANGED, Entry, Store
from pavis.supervisor import boot, events, fleet_host
from pavis.supervisor import workers as wk
from pavis.supervisor.admin import AdminServer
from pavis.supervisor.control import ControlServer, Respond, refusal
from pavis.supervisor.notify import monotonic_usec, notify, watchdog_interval
from pavis.supervisor.sockets import bind, listeners_changed
from pavis.supervisor.source import Source, build
from pavis.supervisor.source import read as read_file
from pavis.supervisor.status import snapshot
from shm import AckTimeout, Publisher, ShmError, WorkerRejected

log = logging.getLogger("pavis.supervisor")

HEARTBEAT_TIMEOUT = 10.0  # a worker whose heartbeat is older than this is hung
BOOT_GRACE = 15.0  # a new worker gets this long before its heartbeat is judged
DEFAULT_WAIT = 10.0
STOP_MARGIN = 2.0  # seconds beyond the artifact's drain bound before SIGKILL


@dataclass
class Options:
    source: str | None  # config or artifact path; None = boot from last-known-good
    workers: int
    control: str
    state_dir: str
    name: str
    fleet: fleet_host.FleetOptions | None = None  # follow a fleet through etcd
    binds: dict[str, str] = field(default_factory=dict)  # listener name → address on this host


@dataclass(frozen=True)
class Generation:
    """A published generation as the supervisor knows it."""

    number: int
    checksum: str
    source: str
    model: Model
    source_digest: str = ""  # of the source bytes it was compiled from; "" = not comparable


class Arbiter:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.boot_id = uuid.uuid4().hex[:12]
        self.store = Store(opts.state_dir)
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.slots = [wk.Slot(i) for i in range(opts.workers)]
        self.current: Generation | None = None
        self.generations: dict[int, Generation] = {}  # retained in shm
        self.reloads: dict[str, int] = {}  # outcome → count (metrics)
        self.ready_announced = False
        self.stopping = False
        self.halt_reason = ""
        self._last_turn = time.time()  # wall clock of the last heartbeat check
        self._beat_grace_until = 0.0
        self._load_ms = 0.0  # of the flip in progress (answers report it)
        self._ops = threading.RLock()
        self._compiling = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.listeners: dict[str, Any] = {}
        self.publisher: Publisher | None = None
        self.control: ControlServer | None = None
        self.admin: AdminServer | None = None
        self.fleet: fleet_host.FleetHost | None = None
        self.reload_source = opts.source or ""  # what a reload without a path reads

    # ================================================================== boot

    def run(self) -> int:
        """Boot, loop until stopped; returns the process exit code."""
        self._install_signals()
        try:
            self._boot()
        except (PavisError, ShmError, OSError) as exc:
            log.error("boot failed: %s", exc)
            self._cleanup()
            return 1
        try:
            code = self._loop()
        except Exception:
            # A bug in the loop must not orphan the workers: stop them like a SIGTERM would.
            log.exception("the supervisor loop failed; stopping the workers")
            self.halt_reason = "internal error in the supervisor loop"
            self.stopping = True
            code = self._stop()
        finally:
            self._cleanup()
        return code

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in (
            signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD,
            signal.SIGUSR1, signal.SIGUSR2,
        ):  # fmt: skip
            # The handler does nothing: the byte on the wakeup fd carries the signal.
            signal.signal(sig, lambda s, f: None)

    def _boot(self) -> None:
        data, source, self.reload_source = fleet_host.initial_artifact(
            self.opts.source, self.store, self.opts.fleet, self._wake_r
        )
        header, model = read(data)
        checksum = self.store.put(data)
        # The instance lock first: a second supervisor of this name fails on it, not on a port.
        # One slot per worker: workers compare their connection counts with every other
        # slot's on each accepting wake-up, and the acknowledgement polling reads them all.
        # The lock in the state directory (private to the service user), not in /dev/shm.
        self.publisher = Publisher(
            self.opts.name, slots=len(self.slots), lock_dir=self.opts.state_dir
        )
        for entry, uid in self.publisher.hostile:
            log.warning("/dev/shm/%s belongs to uid %d: left alone, never opened", entry, uid)
        self.listeners = boot.bind_taking_over(
            self.opts.name, fleet_host.with_binds(model, self.opts.binds)
        )
        number = self.publisher.publish(data)
        self.publisher.activate(number)
        gen = Generation(number, checksum, source, model)
        self.current = self.generations[number] = gen
        self.control = ControlServer(self.opts.control, self.handle_request)
        if isinstance(model.admin, Admin):
            self.admin = AdminServer(bind(model.admin.host, model.admin.port, "admin"), self)
        for slot in self.slots:
            self._spawn(slot)
        self.control.start()
        if self.admin:
            self.admin.start()
        if self.opts.fleet is not None:
            self.fleet = fleet_host.FleetHost(self, self.opts.fleet, self.opts.binds)
            self.fleet.start()
        self._record("boot", source, ACCEPTED, number, checksum, "")
        log.info(
            "serving generation %d (%s) from %s with %d workers; control %s",
            number, checksum, source, len(self.slots), self.opts.control,
        )  # fmt: skip

    # ================================================================== loop

    def _loop(self) -> int:
        self._last_turn = time.time()
        watchdog = watchdog_interval()
        next_ping = 0.0
        while not self.stopping:
            if watchdog is not None and time.monotonic() >= next_ping:
                # Pinged from the loop itself: a wedged loop is what systemd should restart.
                notify("WATCHDOG=1")
                next_ping = time.monotonic() + watchdog
            for sig in self._wait(0.25):
                handler = getattr(self, f"handle_{signal.Signals(sig).name[3:].lower()}", None)
                if handler is not None:
                    handler()
                if self.stopping:
                    break
            if self.stopping:
                break
            self.handle_chld()
            self._check_control()
            self._maintain()
            self._check_heartbeats()
            self._check_ready()
        return self._stop()

    def _wait(self, timeout: float) -> list[int]:
        try:
            readable, _, _ = select.select([self._wake_r], [], [], timeout)
        except InterruptedError:
            readable = [self._wake_r]
        if not readable:
            return []
        try:
            return list(os.read(self._wake_r, 4096))
        except BlockingIOError:
            return []

    def handle_hup(self) -> None:
        if self.fleet is not None:
            log.error("SIGHUP ignored: %s", self.fleet.refusal("reload"))
            return
        log.info("SIGHUP: reloading from %s", self.reload_source or "(no config path)")
        threading.Thread(target=self._reload_quietly, name="sighup-reload", daemon=True).start()

    def _reload_quietly(self) -> None:
        try:
            answer = self.reload(None, wait=True, timeout=DEFAULT_WAIT)
            log.info("SIGHUP reload: %s", answer)
        except PavisError as exc:
            log.error("SIGHUP reload rejected: %s", exc)

    def handle_term(self) -> None:
        log.info("SIGTERM: graceful stop")
        self.stopping = True
        self._stop_signal = signal.SIGTERM

    def handle_int(self) -> None:
        log.info("SIGINT: graceful stop")
        self.stopping = True
        self._stop_signal = signal.SIGTERM

    def handle_quit(self) -> None:
        log.info("SIGQUIT: immediate stop")
        self.stopping = True
        self._stop_signal = signal.SIGQUIT

    def handle_usr1(self) -> None:
        # Default action would kill the supervisor and orphan the workers (an nginx habit of
        # "reopen logs" must not do that); there is nothing to reopen: logs go to stderr.
        log.info("SIGUSR1 ignored (logs go to stderr)")

    def handle_usr2(self) -> None:
        log.info("SIGUSR2 ignored")

    def handle_chld(self) -> None:
        now = time.monotonic()
        for pid, status in wk.reap({s.pid for s in self.slots if s.pid}):
            for slot in self.slots:
                if slot.pid == pid:
                    wk.note_exit(slot, status, now)
                    log.warning("worker %d (slot %d) %s", pid, slot.index, slot.last_exit)
                    if slot.boot_failures >= wk.MAX_BOOT_FAILURES and not self.stopping:
                        self.halt_reason = (
                            f"slot {slot.index} failed to boot {slot.boot_failures} times "
                            f"in a row ({slot.last_exit}); not restarting"
                        )
                        log.error("halting: %s", self.halt_reason)
                        self.stopping = True
                        self._stop_signal = signal.SIGTERM
                    break

    def _maintain(self) -> None:
        """Close the shm slots of reaped workers and respawn them when their backoff is over."""
        due = [s for s in self.slots if not s.alive and (s.needs_close or s.respawn_at)]
        if not due or self.stopping:
            return
        if not self._ops.acquire(blocking=False):
            return  # a flip is in progress; try again on the next turn
        try:
            now = time.monotonic()
            for slot in due:
                if slot.needs_close:
                    assert self.publisher is not None
                    self.publisher.close_slot(slot.index)
                    slot.needs_close = False
                if now >= slot.respawn_at:
                    slot.restarts += 1
                    try:
                        self._spawn(slot)
                    except OSError as exc:  # fork failed (EAGAIN, ENOMEM): try again later
                        log.error("cannot start a worker in slot %d: %s", slot.index, exc)
                        slot.needs_close = True
                        slot.respawn_at = now + wk.BACKOFF_MAX
        finally:
            self._ops.release()

    def _spawn(self, slot: wk.Slot) -> None:
        assert self.publisher is not None
        with self._ops:
            notify_fd = self.publisher.open_slot(slot.index)
            drop_fds = [self._wake_r, self._wake_w]
            drop_socks = []
            if self.control is not None:
                drop_fds += self.control.child_fds()
                drop_socks.append(self.control.sock)
            if self.admin is not None:
                drop_fds += self.admin.child_fds()
                drop_socks.append(self.admin.socket)
            slot.pid = wk.spawn(
                self.opts.name,
                slot.index,
                notify_fd,
                self.listeners,
                drop_fds,
                drop_socks,
                self.publisher.wake_fds,
            )
            slot.started = time.monotonic()
            slot.started_wall = time.time()
            slot.respawn_at = 0.0
            slot.notify_fd = notify_fd
        log.info("worker %d started in slot %d", slot.pid, slot.index)

    def _check_heartbeats(self) -> None:
        """SIGKILL a worker whose heartbeat stopped (it is replaced like any dead worker)."""
        assert self.publisher is not None
        now, wall = time.monotonic(), time.time()
        gap, self._last_turn = wall - self._last_turn, wall
        if gap > 2.0:
            # We did not run either (SIGSTOP of the process group, a suspended VM or laptop):
            # every heartbeat looks old. Give the workers a fresh period instead of killing all.
            self._beat_grace_until = wall + HEARTBEAT_TIMEOUT
            log.warning("the supervisor did not run for %.1f s; heartbeats get a grace period", gap)
        if wall < self._beat_grace_until:
            return
        infos = {i.slot: i for i in self.publisher.slots()}
        for slot in self.slots:
            info = infos.get(slot.index)
            if not slot.alive or info is None or info.pid != slot.pid:
                if slot.alive and now - slot.started > BOOT_GRACE:
                    self._kill_hung(slot, f"never attached in {BOOT_GRACE:.0f} s")
                continue
            if info.heartbeat < slot.started_wall:
                if now - slot.started > BOOT_GRACE:
                    self._kill_hung(slot, f"no heartbeat in {BOOT_GRACE:.0f} s since start")
            elif wall - info.heartbeat > HEARTBEAT_TIMEOUT:
                self._kill_hung(slot, f"no heartbeat for {wall - info.heartbeat:.1f} s")

    def _kill_hung(self, slot: wk.Slot, why: str) -> None:
        log.error("worker %d (slot %d) is hung: %s; killing it", slot.pid, slot.index, why)
        wk.kill(slot.pid, signal.SIGKILL)

    def _check_ready(self) -> None:
        if not self.ready_announced and self.ready():
            self.ready_announced = True
            assert self.current is not None
            self.store.mark_good(self.current.checksum)
            notify("READY=1", self._status_line())
            log.info("ready: every worker serves generation %d", self.current.number)

    def ready(self) -> bool:
        """Every slot has a live worker that serves the current generation, and we are not
        stopping (a draining proxy tells load balancers to go elsewhere)."""
        if self.current is None or self.publisher is None or self.stopping:
            return False
        infos = {i.slot: i for i in self.publisher.slots()}
        for slot in self.slots:
            info = infos.get(slot.index)
            if not slot.alive or info is None or info.generation != self.current.number:
                return False
        return True

    def _status_line(self) -> str:
        cur = self.current
        if cur is None:
            return "STATUS=booting"
        return f"STATUS=generation {cur.number} checksum {cur.checksum} workers {len(self.slots)}"

    # ================================================================== stop

    def _stop(self) -> int:
        notify("STOPPING=1")
        # A flip in progress finishes (or times out) first: it uses the Publisher we close.
        # Never released: later requests are refused by _check_running.
        if not self._ops.acquire(timeout=DEFAULT_WAIT + 5):
            log.warning("a reload is still running; stopping anyway")
        sig = getattr(self, "_stop_signal", signal.SIGTERM)
        pids = {s.pid for s in self.slots if s.alive}
        drain = STOP_MARGIN
        if self.current is not None:
            drain += self.current.model.limits.drain_timeout_ms / 1000
        if sig == signal.SIGQUIT:
            drain = 1.0
        for pid in pids:
            wk.kill(pid, sig)
        left = wk.wait_all(pids, time.monotonic() + drain)
        for pid in left:
            log.warning("worker %d did not stop in %.1f s; killing it", pid, drain)
            wk.kill(pid, signal.SIGKILL)
        wk.wait_all(left, time.monotonic() + 5)
        for slot in self.slots:
            slot.pid = 0
        if self.halt_reason:
            log.error("stopped: %s", self.halt_reason)
            return 1
        log.info("stopped")
        return 0

    def _cleanup(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()  # revokes its lease: the host leaves the fleet's reports at once
        signal.set_wakeup_fd(-1)
        if self.control is not None:
            self.control.close()
        if self.admin is not None:
            self.admin.close()
        for sock in self.listeners.values():
            sock.close()
        if self.publisher is not None:
            self.publisher.close(unlink=True)
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ================================================================== control requests

    def handle_request(self, req: dict[str, Any], respond: Respond) -> None:
        op = req["op"]
        if op == "status":
            respond({"ok": True, "status": self.status()})
        elif op == "history":
            respond({"ok": True, "history": [e.to_json() for e in self.store.history()]})
        elif op in ("reload", "rollback") and self.fleet is not None:
            respond(refusal("fleet_host", self.fleet.refusal(op)))
        elif op in ("reload", "rollback"):
            wait = bool(req.get("wait", True))
            timeout = float(req.get("timeout") or DEFAULT_WAIT)
            if op == "reload":
                path = req.get("path")
                answer = self.reload(path, wait, timeout, respond)
            else:
                to = req.get("to")
                answer = self.rollback(None if to is None else str(to), wait, timeout, respond)
            respond({"ok": True, **answer})
        else:
            respond(refusal("usage", f"unknown op {op!r}", 2))

    def reload(
        self, path: str | None, wait: bool, timeout: float, respond: Respond | None = None
    ) -> dict[str, Any]:
        """Load, check, store and flip to a config or artifact; all-or-nothing. Sources whose
        bytes are the current generation's are not compiled; others are compiled before
        ``_ops`` is taken."""
        source = path or self.reload_source
        self._check_running()
        self._check_client("reload", respond)
        t0 = time.monotonic()
        if not source:
            raise self._reject(
                "reload",
                "",
                "no config path: this supervisor booted from a stored "
                "artifact whose config file is unknown or gone; give a path",
            )
        while True:
            src, built = self._prepare(source)
            with self._ops:
                self._check_running()
                self._check_client("reload", respond)
                if built is None and not self._unchanged(src):
                    continue  # a flip came in between: compile after all, outside the lock
                notify("RELOADING=1", monotonic_usec())
                try:
                    if built is None:
                        answer = self._answer_unchanged(src, t0)
                    else:
                        data, reads_files = built
                        try:
                            header, model = read(data)
                        except PavisError as exc:
                            raise self._reject("reload", source, str(exc), code=exc.code) from None
                        # Embedded files (TLS PEM) may change under an unchanged config.
                        digest = "" if reads_files else src.digest
                        answer = self._flip(
                            "reload", source, data, header.checksum, model, wait, timeout,
                            respond, t0, digest,
                        )  # fmt: skip
                finally:
                    notify("READY=1", self._status_line())
            break
        self.store.flush()
        return answer

    def _prepare(self, source: str) -> tuple[Source, tuple[bytes, bool] | None]:
        """The source read, and built (None when unchanged); outside ``_ops``."""
        try:
            src = read_file(source)
            if self._unchanged(src):
                return src, None
            with self._compiling:
                return src, build(src)
        except PavisError as exc:
            raise self._reject("reload", source, str(exc), code=exc.code) from None

    def _unchanged(self, src: Source) -> bool:
        cur = self.current
        return cur is not None and cur.source_digest == src.digest

    def _answer_unchanged(self, src: Source, t0: float) -> dict[str, Any]:
        cur = self.current
        assert cur is not None
        self._load_ms = round((time.monotonic() - t0) * 1000, 1)
        self._record("reload", src.path, UNCHANGED, cur.number, cur.checksum, "")
        log.info("reload unchanged: %s has the bytes of generation %d", src.path, cur.number)
        return {
            **self._answer(cur, UNCHANGED, t0),
            "message": f"{src.path} is unchanged since generation {cur.number} "
            f"(source digest {src.digest}): not recompiled",
        }

    def rollback(
        self, to: str | None, wait: bool, timeout: float, respond: Respond | None = None
    ) -> dict[str, Any]:
        """Flip to the previous (or a named) generation without compiling anything."""
        self._check_running()
        with self._ops:
            self._check_running()
            self._check_client("rollback", respond)
            assert self.current is not None
            t0 = time.monotonic()
            checksum = self._rollback_target(to)
            source = f"rollback to {checksum}"
            notify("RELOADING=1", monotonic_usec())
            try:
                try:
                    data = self.store.get(checksum)
                    _, model = read(data)
                except PavisError as exc:
                    raise self._reject("rollback", source, str(exc)) from None
                answer = self._flip(
                    "rollback", source, data, checksum, model, wait, timeout, respond, t0
                )
            finally:
                notify("READY=1", self._status_line())
        self.store.flush()
        return answer

    def _rollback_target(self, to: str | None) -> str:
        assert self.current is not None
        entries = [e for e in self.store.history() if e.outcome == ACCEPTED and e.checksum]
        if to is None:
            for e in reversed(entries):
                if e.checksum != self.current.checksum:
                    return e.checksum
            raise self._reject("rollback", "rollback", "no previous generation to roll back to")
        if to.isdigit() and len(to) <= 9:
            number = int(to)
            if number in self.generations:
                return self.generations[number].checksum
            mine = [e for e in entries if e.generation == number and e.boot == self.boot_id]
            other = [e for e in entries if e.generation == number]
            found = mine or other
            if not found:
                raise self._reject(
                    "rollback", "rollback", f"no accepted generation {number} in history"
                )
            return found[-1].checksum
        try:
            return self.store.resolve(to)
        except PavisError as exc:
            raise self._reject("rollback", "rollback", str(exc)) from None

    def _flip(
        self,
        op: str,
        source: str,
        data: bytes,
        checksum: str,
        model: Model,
        wait: bool,
        timeout: float,
        respond: Respond | None,
        t0: float,
        digest: str = "",
    ) -> dict[str, Any]:
        """Make ``data`` current on every worker, or on none (the caller holds ``_ops``).
        ``digest`` is that of the source bytes ``data`` was compiled from ("" = unknown)."""
        assert self.current is not None and self.publisher is not None
        self._load_ms = round((time.monotonic() - t0) * 1000, 1)  # compile or read + decode
        old = self.current
        if checksum == old.checksum:
            if digest:  # the next reload of these bytes is answered without compiling
                self.current = self.generations[old.number] = replace(old, source_digest=digest)
            self._record(op, source, UNCHANGED, old.number, checksum, "")
            return {
                **self._answer(self.current, UNCHANGED, t0),
                "message": f"compiled to the checksum generation {old.number} already serves",
            }
        changed = listeners_changed(old.model, model)
        if changed:
            raise self._reject(op, source, changed, checksum)
        self.store.put(data)
        # A generation still in shm with the same bytes is flipped to, not republished.
        target = next((g for g in self.generations.values() if g.checksum == checksum), None)
        if target is None or target.number not in self.publisher.retained():
            try:
                number = self.publisher.publish(data)
            except ShmError as exc:  # no_space, write_failed: nothing was made current
                raise self._reject(op, source, str(exc), checksum) from None
            target = Generation(number, checksum, source, model, digest)
            self.generations[number] = target
        elif digest:
            target = self.generations[target.number] = replace(target, source_digest=digest)
        self.publisher.activate(target.number)
        self.current = target
        if not wait and respond is not None:
            respond({"ok": True, **self._answer(target, "activated", t0)})
        try:
            # Only slots with a live process: a slot waiting for its restart has nobody to ask
            # (its next worker boots on the current generation anyway). No spawn happens while
            # we hold _ops, so this set cannot grow during the wait.
            live = [s.index for s in self.slots if s.alive]
            self.publisher.wait_acked(target.number, timeout, slots=live)
            self._check_digests(target)
        except (WorkerRejected, AckTimeout, ShmError) as exc:
            self._flip_back(old, timeout)
            outcome = TIMEOUT if isinstance(exc, AckTimeout) else REJECTED
            reason = f"{exc}; every worker flipped back to generation {old.number}"
            self._record(op, source, outcome, target.number, checksum, reason)
            log.warning("%s %s: %s", op, outcome, reason)
            self._forget_unused()
            if outcome == TIMEOUT:
                raise WaitTimeout(reason) from None
            raise ControlError(reason) from None
        # Visible in memory at once; written to disk by the caller after the answer and
        # outside _ops (fsyncs cost ~10 ms here, and the workers already serve it).
        self.store.mark_good(checksum, flush=False)
        self._record(op, source, ACCEPTED, target.number, checksum, "", flush=False)
        answer = self._answer(target, ACCEPTED, t0)
        if respond is not None:
            respond({"ok": True, **answer})
        self._forget_unused()
        log.info(
            "%s accepted: generation %d, checksum %s (%s)", op, target.number, checksum, source
        )
        return answer

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
        assert self.publisher is not None
        self.publisher.collect()
        retained = set(self.publisher.retained())
        for number in list(self.generations):
            if number not in retained:
                del self.generations[number]
        if self.reloads.get(ACCEPTED, 0) % 32 == 0:
            self.store.prune()

    def _answer(self, gen: Generation, outcome: str, t0: float) -> dict[str, Any]:
        return {
            "outcome": outcome,
            "generation": gen.number,
            "checksum": gen.checksum,
            "source": gen.source,
            "workers": len(self.slots),
            "elapsed_ms": round((time.monotonic() - t0) * 1000, 1),
            "load_ms": self._load_ms,
            "source_digest": gen.source_digest,
        }

    def _reject(
        self, op: str, source: str, reason: str, checksum: str = "", code: str = ""
    ) -> ControlError:
        log.warning("%s rejected (%s): %s", op, source or "no source", reason)
        self._record(op, source, REJECTED, 0, checksum, reason)
        error = ControlError(reason)
        if code in ("compile_memory", "compile_timeout", "compile_crashed"):
            error.code = code  # the refusal names why the compile failed
        return error

    def _record(
        self,
        op: str,
        source: str,
        outcome: str,
        number: int,
        checksum: str,
        reason: str,
        flush: bool = True,
    ) -> None:
        if op != "boot":
            self.reloads[outcome] = self.reloads.get(outcome, 0) + 1
        entry = Entry(time.time(), op, source, outcome, number, checksum, reason, self.boot_id)
        self.store.record(entry, flush)

    def _check_client(self, op: str, respond: Respond | None) -> None:
        # A request that waited for its turn behind a slow one is dropped if its client gave
        # up: executing it later would surprise whoever retried, or moved on.
        if respond is not None and respond.gone():
            log.warning("%s dropped: its client hung up while it waited for its turn", op)
            raise ControlError(f"{op} dropped: the client hung up before its turn")

    def _check_control(self) -> None:
        """Listen again if the control socket file was deleted (or replaced)."""
        if self.control is None or not self.control.missing():
            return
        try:
            self.control.rebind()
        except PavisError as exc:
            events.note(log, logging.ERROR, "control_rebind_failed",
                        "the control socket %s is gone and cannot be recreated: %s",
                        self.opts.control, exc)  # fmt: skip
            return
        log.warning("the control socket %s was deleted; listening on a new one", self.opts.control)

    def _check_running(self) -> None:
        if self.stopping:
            raise ControlError("the supervisor is stopping")

    # ================================================================== status

    def status(self) -> dict[str, Any]:
        return snapshot(self)
