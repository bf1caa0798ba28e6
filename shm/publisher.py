"""The supervisor side: publish generations, flip between them, wait for acknowledgements.

Owns: the control block's header, slot lifecycle (open before fork, close after reaping),
notify pipes, the slots' wake-up eventfds, retention and reclaiming a dead supervisor's
leftovers. Must not: block on anything but short sleeps (the supervisor has no event loop of
its own here), or interpret the published bytes.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import time
from collections.abc import Iterable

import posix_ipc  # type: ignore[import-not-found]  # no stubs published

from shm import control, lock, names, segment
from shm.control import SlotInfo
from shm.errors import AckTimeout, InstanceBusy, ShmError, WorkerRejected

# wait_acked polls the slots, first every 50 µs (an ack usually lands within a millisecond),
# backing off to every 1 ms: flips are latency-critical, long waits need not burn a core.
_POLL_FIRST = 0.00005
_POLL_MAX = 0.001


class Publisher:
    """One per instance name and host. See docs/INTERFACES.md "Shared memory".

    Every object is created with ``mode`` set explicitly (the umask does not matter); with
    ``gid`` the objects belong to that group and are group-readable (0640). The liveness
    lock lives in ``lock_dir`` (private to this user; ``names.default_lock_dir()`` if None).
    Entries of this name in /dev/shm that another user owns are hostile: never opened,
    used or removed (``hostile`` lists them); such a control block refuses the start.
    """

    def __init__(
        self,
        name: str,
        slots: int = 64,
        mode: int = 0o600,
        gid: int | None = None,
        lock_dir: str | None = None,
    ) -> None:
        self.name = names.check_name(name)
        if not 1 <= slots <= 4096:
            raise ShmError("bad_slot", f"slots must be 1..4096, not {slots}")
        if mode & ~0o660 or (mode & 0o600) != 0o600:
            raise ShmError("bad_mode", f"mode {mode:#o}: owner rw required, no execute/other bits")
        if gid is not None and not mode & 0o060:
            mode |= 0o040  # a configured group is there to read: 0600 + gid means 0640
        self.mode = mode
        self.gid = gid
        self.nslots = slots
        self._pipes: dict[int, tuple[int, int]] = {}
        self._retained: set[int] = set()
        self._current = 0
        self._previous = 0
        self.hostile: list[tuple[str, int]] = []
        lock_dir = lock_dir or names.default_lock_dir()
        self.lock_path = names.lock_path(name, lock_dir)
        try:
            self._lock_fd = lock.acquire(name, mode, gid, lock_dir)
        except OSError as exc:
            raise ShmError("unavailable", f"cannot take the lock of {name!r}: {exc}") from None
        try:
            high_water = self._reclaim()
            self._ctl = self._create_control(high_water)
        except (OSError, posix_ipc.Error) as exc:
            lock.release(self._lock_fd, self.lock_path, unlink=False)
            full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
            reason = "no_space" if full else "unavailable"
            raise ShmError(reason, f"cannot set up instance {name!r}: {exc}") from None
        except BaseException:
            lock.release(self._lock_fd, self.lock_path, unlink=False)
            raise
        self._high_water = high_water
        self._pid = os.getpid()
        # One eventfd per slot, inherited by every worker: a worker wakes another with it
        # (``workers.accept``: a worker that fills up wakes the ones standing by for it).
        # Unlike the notify pipes they outlive workers: a respawned worker gets the same.
        self.wake_fds = tuple(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(slots))

    # ------------------------------------------------------------------ start-up

    def _reclaim(self) -> int:
        """Unlink every leftover object of this name this user owns; return the highest
        generation seen. Another user's entries are left alone, unopened."""
        high = 0
        entries = names.leftovers(self.name)
        ctl = names.control(self.name)[1:]
        self.hostile = names.foreign(entries)
        for entry, uid in self.hostile:
            high = max(high, names.generation_of(self.name, entry))  # never reused
            if entry == ctl:
                raise ShmError(
                    "hostile",
                    f"{names.SHM_DIR}/{entry} belongs to uid {uid}, not to this user (uid "
                    f"{os.geteuid()}): refusing to open or remove it. Remove it as root, or "
                    "give this instance another --name or a private /dev/shm",
                )
        hostile = {e for e, _ in self.hostile}
        for entry in entries:
            if entry in hostile:
                continue
            if entry == ctl:
                mark, pid = _leftover_header(self.name)
                if _maps(pid, entry):
                    # Its lock is elsewhere (another lock directory): still a live owner.
                    raise InstanceBusy(self.name, pid)
                high = max(high, mark)
            high = max(high, names.generation_of(self.name, entry))
            names.unlink_entry(entry)
        return high

    def _create_control(self, high_water: int) -> mmap.mmap:
        size = control.size(self.nslots)
        mem = posix_ipc.SharedMemory(names.control(self.name), posix_ipc.O_CREX, mode=self.mode)
        try:
            if self.gid is not None:
                os.fchown(mem.fd, -1, self.gid)
            os.fchmod(mem.fd, self.mode)
            # Every page backed before it is mapped: a sparse page touched later, when
            # /dev/shm is full, is SIGBUS in whichever worker touches it. Full now is ENOSPC.
            os.posix_fallocate(mem.fd, 0, size)
            m = mmap.mmap(mem.fd, size)
        except BaseException:
            mem.close_fd()
            posix_ipc.unlink_shared_memory(mem.name)
            raise
        mem.close_fd()
        control.init(m, self.nslots, high_water, os.getpid())
        return m

    # ------------------------------------------------------------------ generations

    @property
    def current(self) -> int:
        return self._current

    @property
    def previous(self) -> int:
        return self._previous

    def publish(self, data: bytes | memoryview) -> int:
        """Write ``data`` into a new segment; return its generation (not yet current)."""
        self._check_owner()
        generation = self._high_water + 1
        while True:
            try:
                segment.create(self.name, generation, data, self.mode, self.gid)
                break
            except posix_ipc.ExistentialError:
                generation += 1  # a name is never reused: skip anything already there
            except OSError as exc:
                reason = "no_space" if exc.errno == errno.ENOSPC else "write_failed"
                raise ShmError(reason, f"cannot publish generation {generation}: {exc}") from None
        self._high_water = generation
        self._retained.add(generation)
        self._write_header()
        return generation

    def activate(self, generation: int) -> None:
        """Make a retained generation current (forward or rollback) and notify every slot."""
        self._check_owner()
        if generation not in self._retained:
            raise ShmError("unknown_generation", f"generation {generation} is not retained")
        if generation != self._current:
            self._previous, self._current = self._current, generation
            self._write_header()
        for _, write_fd in self._pipes.values():
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                # A full pipe already says "look again"; a dead reader will be closed later.
                os.write(write_fd, b"\x01")

    def _write_header(self) -> None:
        control.write_header(self._ctl, self._current, self._previous, self._high_water, self._pid)

    def wait_acked(
        self, generation: int, timeout: float, slots: Iterable[int] | None = None
    ) -> None:
        """Return once every open slot (or those given) serves ``generation``.

        A slot whose worker is dead is not waited for; a slot not yet attached (pid 0) is.
        Raises WorkerRejected as soon as one slot rejects it, AckTimeout naming the rest.
        """
        wanted = sorted(self._pipes) if slots is None else sorted(set(slots))
        deadline = time.monotonic() + timeout
        pause = _POLL_FIRST
        while True:
            missing = []
            for slot in wanted:
                info = control.read_slot(self._ctl, self._check_slot(slot))
                if not info.open:
                    continue
                if info.consistent and info.rejected_generation == generation:
                    raise WorkerRejected(slot, info.pid, info.reason, generation)
                if info.consistent and info.generation == generation:
                    continue
                if info.pid and not control.alive(info.pid):
                    continue
                missing.append((slot, info.pid))
            if not missing:
                return
            if time.monotonic() >= deadline:
                raise AckTimeout(generation, missing)
            time.sleep(pause)
            pause = min(pause * 1.5, _POLL_MAX)

    # ------------------------------------------------------------------ slots

    def open_slot(self, slot: int) -> int:
        """Before fork: reset ``slot`` and create its notify pipe; return the read end.

        The Publisher owns both ends (close_slot closes them); the forked worker hands the
        read end to Subscriber. The read end stays inheritable for a worker that execs.
        """
        self._check_owner()
        self._check_slot(slot)
        if slot in self._pipes:
            self._close_pipe(slot)
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_inheritable(read_fd, True)
        self._pipes[slot] = (read_fd, write_fd)
        control.reset_slot(self._ctl, slot, is_open=True)
        return read_fd

    def close_slot(self, slot: int) -> None:
        """The slot's worker is gone (reaped): free the slot and close its pipe."""
        self._check_owner()
        self._check_slot(slot)
        self._close_pipe(slot)
        control.reset_slot(self._ctl, slot, is_open=False)

    def _close_pipe(self, slot: int) -> None:
        fds = self._pipes.pop(slot, None)
        for fd in fds or ():
            os.close(fd)

    def slots(self) -> list[SlotInfo]:
        """Snapshots of every open slot."""
        out = []
        for slot in range(self.nslots):
            info = control.read_slot(self._ctl, slot)
            if info.open:
                out.append(info)
        return out

    def stats(self, slot: int) -> bytes:
        """The opaque stats ``slot``'s worker last published (b"" if none, or if its writer
        died mid-update). Reset to b"" whenever the slot is opened or closed."""
        return control.read_stats(self._ctl, self._check_slot(slot))[0]

    def _check_slot(self, slot: int) -> int:
        if not 0 <= slot < self.nslots:
            raise ShmError("bad_slot", f"slot {slot} is not in 0..{self.nslots - 1}")
        return slot

    # ------------------------------------------------------------------ retention

    def retained(self) -> list[int]:
        """Generations of this instance still present in /dev/shm."""
        return names.generations(self.name)

    def collect(self) -> list[int]:
        """Unlink generations that are neither current, previous, nor served by an open slot.

        A generation published but never activated is unlinked too: call this after the
        flip it belongs to has settled.
        """
        self._check_owner()
        keep = {self._current, self._previous}
        keep.update(info.generation for info in self.slots())
        gone = []
        for generation in sorted(set(self.retained()) | self._retained):
            if generation in keep:
                continue
            if names.unlink_entry(names.segment(self.name, generation)[1:]):
                gone.append(generation)
            self._retained.discard(generation)
        return gone

    # ------------------------------------------------------------------ shutdown

    def close(self, unlink: bool = True) -> None:
        """Release the lock; with ``unlink`` also remove every object of this instance.

        ``unlink=False`` leaves segments and the control block for still-running workers;
        the next Publisher of this name reclaims them.
        """
        if self._lock_fd < 0 or os.getpid() != self._pid:
            return  # closed already, or a forked child's copy: the parent owns everything
        for slot in list(self._pipes):
            self._close_pipe(slot)
        for fd in self.wake_fds:
            os.close(fd)
        self.wake_fds = ()
        with contextlib.suppress(BufferError):
            self._ctl.close()
        if unlink:
            for entry in names.leftovers(self.name, mine=True):
                names.unlink_entry(entry)
        lock.release(self._lock_fd, self.lock_path, unlink=unlink)
        self._lock_fd = -1

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_owner(self) -> None:
        # A forked child holds a copy of this object but not the lock (closed at fork):
        # it must not act as the supervisor.
        if self._lock_fd < 0 or os.getpid() != self._pid:
            raise ShmError("not_owner", "this Publisher is closed or belongs to another process")


def _leftover_header(name: str) -> tuple[int, int]:
    """(high-water mark, supervisor pid) recorded in a leftover control block of this user,
    (0, 0) if unreadable."""
    try:
        mem = posix_ipc.SharedMemory(names.control(name), read_only=True)
    except posix_ipc.Error:
        return 0, 0
    try:
        if mem.size < control.HEADER.size:
            return 0, 0
        with mmap.mmap(mem.fd, mem.size, prot=mmap.PROT_READ) as m:
            control.check(m, versions=(2, control.VERSION))  # the header is the same in both
            header = control.read_header(m)
            return header.high_water, header.supervisor_pid
    except ShmError:
        return 0, 0
    finally:
        mem.close_fd()


def _maps(pid: int, entry: str) -> bool:
    """True if live process ``pid`` has SHM_DIR/``entry`` mapped (a pid number alone may
    have been reused by an unrelated process)."""
    if not control.alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            maps = f.read()
    except OSError:
        return False
    return f"{names.SHM_DIR}/{entry}".encode() in maps
