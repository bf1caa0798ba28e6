"""The supervisor's main loop: boot, signals, worker upkeep, readiness, stop and control ops.

Owns: the order of boot (load → store → lock → bind → publish → fork), the one loop that
dispatches signals (``handle_<signal>``), reaps and tops up workers and checks heartbeats,
readiness, the stop, and the dispatch of control requests (``op_<op>``). Generation changes
(reload, rollback, the flip, retention, history) belong to ``generations.Generations``; the
arbiter is one of its callers. Must not: import gevent or the worker runtime, or serve
data-plane HTTP.

Concurrency: signal handlers only wake the loop (``signal.set_wakeup_fd``). Control requests
and SIGHUP reloads run in their own threads; ``Generations.lock`` serialises them and every
mutation of the Publisher, the arbiter's own (open/close slot) included. The loop never
blocks on it: it tops up workers only when it is free, and no compile happens under it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
import uuid
from typing import Any

from pavis.artifact import read_head
from pavis.errors import PavisError
from pavis.schema import Admin
from pavis.store import Store
from pavis.supervisor import boot, events, fleet_host
from pavis.supervisor import slots as sl
from pavis.supervisor.admin import AdminServer
from pavis.supervisor.boot import Options
from pavis.supervisor.control import ControlServer, Respond
from pavis.supervisor.generations import DEFAULT_WAIT, Generations
from pavis.supervisor.notify import notify, watchdog_interval
from pavis.supervisor.ops import Ops
from pavis.supervisor.sockets import bind
from pavis.supervisor.status import snapshot
from shm import ShmError

__all__ = ["Arbiter", "Options"]

log = logging.getLogger("pavis.supervisor")

STOP_MARGIN = 2.0  # seconds beyond the artifact's drain bound before SIGKILL


class Arbiter:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.boot_id = uuid.uuid4().hex[:12]
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.slots = [sl.Slot(i) for i in range(opts.workers)]
        self.gens = Generations(
            Store(opts.state_dir),
            workers=len(self.slots),
            boot_id=self.boot_id,
            live=lambda: [s.index for s in self.slots if s.alive],
            stopping=lambda: self.stopping,
            reload_source=opts.source or "",
        )
        self.ready_announced = False
        self.stopping = False
        self.halt_reason = ""
        self._last_turn = time.time()  # wall clock of the last heartbeat check
        self._beat_grace_until = 0.0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.listeners: dict[str, Any] = {}
        self.control: ControlServer | None = None
        self.admin: AdminServer | None = None
        self.fleet: fleet_host.FleetHost | None = None
        self._ops = Ops(self)

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
        gens = self.gens
        data, source, gens.reload_source = fleet_host.initial_artifact(
            self.opts.source, gens.store, self.opts.fleet, self._wake_r
        )
        _, model = read_head(data)  # the head only: the supervisor never holds the routes
        checksum = gens.store.put(data)
        # The instance lock first: a second supervisor of this name fails on it, not on a port.
        # One slot per worker: workers compare their connection counts with every other
        # slot's on each accepting wake-up, and the acknowledgement polling reads them all.
        # The lock in the state directory (private to the service user), not in /dev/shm.
        gens.open(self.opts.name, self.opts.state_dir)
        self.listeners = boot.bind_taking_over(
            self.opts.name, fleet_host.with_binds(model, self.opts.binds)
        )
        number = gens.boot(data, source, model, checksum).number
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
        gens.record_boot()
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
        log.info("SIGHUP: reloading from %s", self.gens.reload_source or "(no config path)")
        threading.Thread(target=self._reload_quietly, name="sighup-reload", daemon=True).start()

    def _reload_quietly(self) -> None:
        try:
            answer = self.gens.reload(None, wait=True, timeout=DEFAULT_WAIT)
            log.info("SIGHUP reload: %s", answer)
        except PavisError as exc:
            log.error("SIGHUP reload rejected: %s", exc)

    def handle_term(self) -> None:
        self._halt("SIGTERM: graceful stop", signal.SIGTERM)

    def handle_int(self) -> None:
        self._halt("SIGINT: graceful stop", signal.SIGTERM)

    def handle_quit(self) -> None:
        self._halt("SIGQUIT: immediate stop", signal.SIGQUIT)

    def _halt(self, why: str, sig: int) -> None:
        log.info("%s", why)
        self.stopping = True
        self._stop_signal = sig

    def handle_usr1(self) -> None:
        # Reopen logs (logrotate's postrotate): the workers hold the access-log files; the
        # supervisor's own log is stderr. Only workers that acknowledged a generation have
        # their handler installed (the default action would kill the rest).
        live = {s.pid for s in self.slots if s.alive}
        pub = self.gens.publisher
        infos = pub.slots() if pub else []
        pids = [i.pid for i in infos if i.pid in live and i.generation]
        log.info("SIGUSR1: %d workers reopen their access logs", len(pids))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # gone: its replacement opens anew
                os.kill(pid, signal.SIGUSR1)

    def handle_usr2(self) -> None:
        log.info("SIGUSR2 ignored")

    def handle_chld(self) -> None:
        now = time.monotonic()
        for pid, status in sl.reap({s.pid for s in self.slots if s.pid}):
            for slot in self.slots:
                if slot.pid == pid:
                    sl.note_exit(slot, status, now)
                    log.warning("worker %d (slot %d) %s", pid, slot.index, slot.last_exit)
                    if slot.boot_failures >= sl.MAX_BOOT_FAILURES and not self.stopping:
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
        if not self.gens.lock.acquire(blocking=False):
            return  # a flip is in progress; try again on the next turn
        try:
            now = time.monotonic()
            for slot in due:
                if slot.needs_close:
                    assert self.gens.publisher is not None
                    self.gens.publisher.close_slot(slot.index)
                    slot.needs_close = False
                if now >= slot.respawn_at:
                    slot.restarts += 1
                    try:
                        self._spawn(slot)
                    except OSError as exc:  # fork failed (EAGAIN, ENOMEM): try again later
                        log.error("cannot start a worker in slot %d: %s", slot.index, exc)
                        slot.needs_close = True
                        slot.respawn_at = now + sl.BACKOFF_MAX
        finally:
            self.gens.lock.release()

    def _spawn(self, slot: sl.Slot) -> None:
        publisher = self.gens.publisher
        assert publisher is not None
        with self.gens.lock:
            notify_fd = publisher.open_slot(slot.index)
            drop_fds = [self._wake_r, self._wake_w]
            drop_socks = []
            if self.control is not None:
                drop_fds += self.control.child_fds()
                drop_socks.append(self.control.sock)
            if self.admin is not None:
                drop_fds += self.admin.child_fds()
                drop_socks.append(self.admin.socket)
            slot.pid = sl.spawn(
                self.opts.name,
                slot.index,
                notify_fd,
                self.listeners,
                drop_fds,
                drop_socks,
                publisher.wake_fds,
            )
            slot.started = time.monotonic()
            slot.started_wall = time.time()
            slot.respawn_at = 0.0
            slot.notify_fd = notify_fd
        log.info("worker %d started in slot %d", slot.pid, slot.index)

    def _check_heartbeats(self) -> None:
        """SIGKILL a worker whose heartbeat stopped (it is replaced like any dead worker)."""
        assert self.gens.publisher is not None
        now, wall = time.monotonic(), time.time()
        gap, self._last_turn = wall - self._last_turn, wall
        if gap > 2.0:
            # We did not run either (SIGSTOP of the process group, a suspended VM or laptop):
            # every heartbeat looks old. Give the workers a fresh period instead of killing all.
            self._beat_grace_until = wall + sl.HEARTBEAT_TIMEOUT
            log.warning("the supervisor did not run for %.1f s; heartbeats get a grace period", gap)
        if wall < self._beat_grace_until:
            return
        infos = {i.slot: i for i in self.gens.publisher.slots()}
        for slot in self.slots:
            why = sl.hung(slot, infos.get(slot.index), now, wall)
            if why:
                log.error("worker %d (slot %d) is hung: %s; killing it", slot.pid, slot.index, why)
                sl.kill(slot.pid, signal.SIGKILL)

    def _check_ready(self) -> None:
        if not self.ready_announced and self.ready():
            self.ready_announced = True
            self.gens.mark_good()
            notify("READY=1", self.gens.status_line())
            assert self.gens.current is not None
            log.info("ready: every worker serves generation %d", self.gens.current.number)

    def ready(self) -> bool:
        """Every slot has a live worker that serves the current generation, and we are not
        stopping (a draining proxy tells load balancers to go elsewhere)."""
        cur, publisher = self.gens.current, self.gens.publisher
        if cur is None or publisher is None or self.stopping:
            return False
        infos = {i.slot: i for i in publisher.slots()}
        for slot in self.slots:
            info = infos.get(slot.index)
            if not slot.alive or info is None or info.generation != cur.number:
                return False
        return True

    # ================================================================== stop

    def _stop(self) -> int:
        notify("STOPPING=1")
        # A flip in progress finishes (or times out) first: it uses the Publisher we close.
        # Never released: later changes are refused (``stopping``).
        if not self.gens.hold(timeout=DEFAULT_WAIT + 5):
            log.warning("a reload is still running; stopping anyway")
        sig = getattr(self, "_stop_signal", signal.SIGTERM)
        pids = {s.pid for s in self.slots if s.alive}
        drain = STOP_MARGIN
        if self.gens.current is not None:
            drain += self.gens.current.head.limits.drain_timeout_ms / 1000
        if sig == signal.SIGQUIT:
            drain = 1.0
        for pid in pids:
            sl.kill(pid, sig)
        left = sl.wait_all(pids, time.monotonic() + drain)
        for pid in left:
            log.warning("worker %d did not stop in %.1f s; killing it", pid, drain)
            sl.kill(pid, signal.SIGKILL)
        sl.wait_all(left, time.monotonic() + 5)
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
        self.gens.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ================================================================== control requests

    def handle_request(self, req: dict[str, Any], respond: Respond) -> None:
        self._ops.handle(req, respond)

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

    # ================================================================== status

    def status(self) -> dict[str, Any]:
        return snapshot(self)
