"""The reaction-state segment: rate-limit buckets every worker of an instance shares.

Owns: ``/pavis.<name>.rl`` — a small writable segment of its own, apart from the read-only
generation segments — its fixed layout, and the one operation on it, ``Buckets.take``: a
GCRA (generic cell rate algorithm, the virtual-scheduling form of a token bucket) decision
for one key, made atomically across processes, so N workers enforce one limit, not N×.
Must not: know HTTP, configuration, routes or clients. A key is bytes and a limit is two
durations; what they mean is the caller's.

Layout (little-endian)::

    0  8s  magic b"PAVISRL1"
    8  I   layout version (1)
    12 I   buckets (a power of two)
    16 I   ways (slots per bucket)
    20 I   lock stripes
    24 Q   untracked: takes that found their bucket full of live keys
    32 Q   reclaimed: slots taken over from an expired key
    40 24s reserved, zero
    64     buckets × ways slots of 16 bytes: key hash (Q, 0 = empty), TAT (q, ns)

State per key is one number, its theoretical arrival time (TAT) on CLOCK_MONOTONIC, which
every process of the machine reads alike. With interval ``T`` (the period divided by the
rate) and ``burst`` ``B``, a take at ``now`` is allowed when ``max(TAT, now) + T - now <=
B·T``, and then stores ``max(TAT, now) + T``: an idle key admits ``B`` requests at once and
then one per ``T``. A key whose TAT is not after ``now`` has no state left — a fresh key is
the same — so its slot is free to reuse: state expires with the condition (at most ``B·T``
after the key's last request), nothing is learned or kept beyond that.

An allowed take also says how long the request would wait if the burst were a queue rather
than a volley (``wait_ns`` = ``max(TAT, now) - now``: the k-th request of a burst waits
``k·T``), which is the caller's delayed mode; the decision itself is the same.

Bounded: ``buckets × ways`` keys. A key hashes (xxh3-64 of the limit's identity and the key)
to one bucket and lives in one of its ways. A take whose bucket holds ``ways`` live keys
is *untracked*: it is allowed, and counted in ``untracked``. Failing open keeps a flood of
distinct keys (spoofed headers, many clients) from turning into refusals of clients that
the limit never meant; the count says when the segment is too small.

The limit's identity is part of the hash (``limit_id``): a limit whose parameters did not
change across a reload keeps its keys' state; a changed one hashes elsewhere and starts
fresh (its old slots expire and are reused). Keeping unchanged state matters because a
reload that reset every bucket would hand every client a new burst.

Trust: /dev/shm is world-writable, so ``attach`` refuses a segment another user owns; the
segment is created with every page backed (``posix_fallocate``): a full /dev/shm is an
error at creation, never a SIGBUS in a worker.

Atomicity: each bucket is read and written under an exclusive POSIX record lock (``lockf``)
on one byte of the segment, chosen by the bucket's stripe. Record locks belong to the
process, so forked workers sharing the descriptor still exclude each other, and a lock dies
with its holder: a killed worker never wedges the others. Nothing inside the lock yields.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time

import posix_ipc  # type: ignore[import-not-found]  # no stubs published
import xxhash

from shm import names
from shm.errors import ShmError

MAGIC = b"PAVISRL1"
VERSION = 1
HEADER = struct.Struct("<8sIIIIQQ24s")
HEADER_SIZE = HEADER.size
assert HEADER_SIZE == 64
SLOT = 16
UNTRACKED_WORD, RECLAIMED_WORD = 3, 4  # 8-byte word indices of the counters
COUNTER_LOCK = 0  # lock byte of the counters; stripe i locks byte i + 1
MAX_KEYS = 1 << 24


class Verdict:
    """One take's answer. ``allowed``: the request may pass. ``retry_after_ns``: when it
    would have been allowed (0 if it was). ``remaining``: requests the key could still make
    at once. ``tracked``: False when the bucket was full (then always allowed).
    ``wait_ns``: for an allowed take, how long it must wait to keep to the rate without
    using the burst at once (the delayed mode: the burst is a queue, not a volley).
    ``reset_ns``: until the key's whole burst is available again."""

    __slots__ = ("allowed", "retry_after_ns", "remaining", "tracked", "wait_ns", "reset_ns")

    def __init__(
        self,
        allowed: bool,
        retry_after_ns: int,
        remaining: int,
        tracked: bool,
        wait_ns: int = 0,
        reset_ns: int = 0,
    ):
        self.allowed = allowed
        self.retry_after_ns = retry_after_ns
        self.remaining = remaining
        self.tracked = tracked
        self.wait_ns = wait_ns
        self.reset_ns = reset_ns

    def __repr__(self) -> str:
        return (
            f"Verdict(allowed={self.allowed}, retry_after_ns={self.retry_after_ns}, "
            f"remaining={self.remaining}, tracked={self.tracked}, wait_ns={self.wait_ns}, "
            f"reset_ns={self.reset_ns})"
        )


def key_hash(limit_id: bytes, key: bytes) -> int:
    """The 64-bit slot tag of ``key`` under ``limit_id`` (never 0: 0 marks an empty slot);
    its low bits choose the bucket."""
    return xxhash.xxh3_64_intdigest(key, seed=xxhash.xxh3_64_intdigest(limit_id)) or 1


def size(buckets: int, ways: int) -> int:
    return HEADER_SIZE + buckets * ways * SLOT


def create(
    name: str, keys: int, mode: int, gid: int | None, ways: int = 8, stripes: int = 64
) -> None:
    """Create ``/pavis.<name>.rl`` exclusively, zeroed, for at least ``keys`` keys (rounded
    up to a power of two of buckets). ShmError("bad_size") for a size out of 1–2**24 keys
    or ways/stripes out of range; posix_ipc.ExistentialError if it exists."""
    if not 1 <= keys <= MAX_KEYS or not 1 <= ways <= 64 or not 1 <= stripes <= 4096:
        raise ShmError(
            "bad_size", f"keys {keys} (1-{MAX_KEYS}), ways {ways} (1-64), stripes {stripes}"
        )
    buckets = 1
    while buckets * ways < keys:
        buckets *= 2
    stripes = min(stripes, buckets)
    mem = posix_ipc.SharedMemory(names.buckets(name), posix_ipc.O_CREX, mode=mode)
    try:
        if gid is not None:
            os.fchown(mem.fd, -1, gid)
        os.fchmod(mem.fd, mode)
        # Zeroed pages, every one backed now: a sparse page first touched when /dev/shm is
        # full would be SIGBUS in the worker touching it; full now is ENOSPC here. The
        # header, written last, makes the segment valid.
        os.posix_fallocate(mem.fd, 0, size(buckets, ways))
        header = HEADER.pack(MAGIC, VERSION, buckets, ways, stripes, 0, 0, bytes(24))
        os.pwrite(mem.fd, header, 0)
    except BaseException:
        mem.close_fd()
        posix_ipc.unlink_shared_memory(mem.name)
        raise
    mem.close_fd()


def unlink(name: str) -> bool:
    """Remove ``/pavis.<name>.rl``; False if it was not there."""
    try:
        posix_ipc.unlink_shared_memory(names.buckets(name))
    except posix_ipc.ExistentialError:
        return False
    return True


class Buckets:
    """A worker's writable mapping of the segment (``attach``)."""

    def __init__(
        self, path: str, fd: int, mapping: mmap.mmap, buckets: int, ways: int, stripes: int
    ):
        self.path = path
        self.fd = fd
        self.buckets = buckets
        self.ways = ways
        self.stripes = stripes
        self._map = mapping
        self._words = memoryview(mapping).cast("Q")
        self._tats = memoryview(mapping).cast("q")
        self._mask = buckets - 1

    @property
    def keys(self) -> int:
        return self.buckets * self.ways

    def counters(self) -> tuple[int, int]:
        """(untracked, reclaimed) since the segment was created."""
        return self._words[UNTRACKED_WORD], self._words[RECLAIMED_WORD]

    def take(
        self, limit_id: bytes, key: bytes, interval_ns: int, burst: int, now_ns: int | None = None
    ) -> Verdict:
        """One request of ``key`` under the limit ``limit_id`` (its parameters' identity):
        at most ``burst`` at once, one per ``interval_ns`` after that."""
        if now_ns is None:
            now_ns = time.monotonic_ns()
        h = key_hash(limit_id, key)
        bucket = h & self._mask
        first = (HEADER_SIZE // 8) + bucket * self.ways * 2  # word index of the bucket
        words, tats = self._words, self._tats
        tolerance = burst * interval_ns
        lock = 1 + bucket % self.stripes
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, lock)
        try:
            slot = free = -1
            for w in range(first, first + self.ways * 2, 2):
                k = words[w]
                if k == h:
                    slot = w
                    break
                if free < 0 and (k == 0 or tats[w + 1] <= now_ns):
                    free = w  # empty, or its key's state has expired
            if slot < 0:
                if free < 0:
                    untracked, reclaimed = True, False
                else:
                    untracked = False
                    reclaimed = words[free] != 0
                    words[free] = h
                    tats[free + 1] = now_ns
                    slot = free
            else:
                untracked = reclaimed = False
            if untracked:
                verdict = Verdict(True, 0, 0, False)
            else:
                start = max(tats[slot + 1], now_ns)
                tat = start + interval_ns
                if tat - now_ns <= tolerance:
                    tats[slot + 1] = tat
                    left = (tolerance - (tat - now_ns)) // interval_ns if interval_ns else burst
                    verdict = Verdict(True, 0, left, True, start - now_ns, tat - now_ns)
                else:
                    wait = tat - now_ns - tolerance
                    verdict = Verdict(False, wait, 0, True, 0, start - now_ns)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, lock)
        if untracked:
            self._count(UNTRACKED_WORD)
        elif reclaimed:
            self._count(RECLAIMED_WORD)
        return verdict

    def _count(self, word: int) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, COUNTER_LOCK)
        try:
            self._words[word] += 1
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, COUNTER_LOCK)

    def close(self) -> None:
        self._words.release()
        self._tats.release()
        self._map.close()
        os.close(self.fd)

    def __enter__(self) -> Buckets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attach(name: str) -> Buckets:
    """Map ``/pavis.<name>.rl`` read-write and check its header; ShmError(reason) if the
    segment is missing, not this layout, or not the size its header says."""
    path = names.buckets(name)
    try:
        mem = posix_ipc.SharedMemory(path)
    except posix_ipc.ExistentialError:
        raise ShmError("missing", f"{path} does not exist") from None
    except posix_ipc.PermissionsError:
        raise ShmError("permission", f"{path} is not writable by this user") from None
    fd = mem.fd  # kept open: the record locks are taken on it
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            # /dev/shm is world-writable: a segment of this name made by another user is
            # hostile, and its state must never decide for this instance.
            raise ShmError("hostile", f"{path} belongs to uid {st.st_uid}, not to this user")
        total = st.st_size
        if total < HEADER_SIZE:
            raise ShmError("truncated", f"{path} is {total} bytes, shorter than its header")
        magic, version, buckets, ways, stripes, _u, _r, _res = HEADER.unpack(os.pread(fd, 64, 0))
        if magic != MAGIC:
            raise ShmError("bad_magic", f"{path} has no bucket-segment header ({magic!r})")
        if version != VERSION:
            raise ShmError("unsupported_version", f"{path} has layout version {version}")
        ok = buckets and buckets & (buckets - 1) == 0 and 1 <= ways <= 64 and stripes >= 1
        if not ok or total != size(buckets, ways):
            raise ShmError(
                "truncated", f"{path} is {total} bytes; its header says {buckets}×{ways} slots"
            )
        mapping = mmap.mmap(fd, total, flags=mmap.MAP_SHARED)
    except BaseException:
        os.close(fd)
        raise
    return Buckets(path, fd, mapping, buckets, ways, stripes)
