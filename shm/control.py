"""The control block ``/pavis.<name>.ctl``: the current generation and one slot per worker.

Layout (little-endian)::

    header, 64 bytes:
    0  8s   magic b"PAVISCTL"
    8  I    layout version (1)
    12 I    number of slots
    16 Q    sequence (odd while the supervisor writes the header)
    24 Q    current generation (0 = none)
    32 Q    previous generation (0 = none)
    40 Q    generation high-water mark (never reused, survives a supervisor restart)
    48 q    supervisor pid
    56 8s   reserved

    slot i at 64 + 256*i:
    0  Q    sequence (odd while its single writer writes it)
    8  B    open flag, 7 bytes padding
    16 q    worker pid (0 until the worker attaches)
    24 Q    generation the worker serves
    32 16s  digest the worker verified for it
    48 d    heartbeat, time.time()
    56 Q    requests served
    64 Q    last rejected generation
    72 H    length of the reason
    74 120s last rejection reason, utf-8
    194 6x  padding
    200 Q   open client connections of the worker (NO_WORKER when the slot has none): see
            below
    208 Q   client connections the worker has accepted in all (0 when the slot has none)
    216     padding to 256

    stats area of slot i at 64 + 256*slots + STATS_SIZE*i (STATS_SIZE = 16 KiB):
    0  Q    sequence (odd while its worker writes it)
    8  I    length of the data (0 = nothing published)
    12 4x   padding
    16      data: opaque bytes, at most STATS_MAX; shm never looks inside

Each region has exactly one writer at a time (header: the supervisor; a slot: the supervisor
while it is closed or being opened, afterwards only its worker), and each carries a sequence
lock so readers never see a torn update (a slot's stats area has its own, so the supervisor's
ack polling never copies stats). The exceptions are a slot's connection count and accepted
total: aligned 8-byte words, each stored and loaded whole, outside the seqlock. Its worker
rewrites the count at every client connection opened and closed, and the total at every one
accepted; the other workers read them when deciding whether to accept now and how many
(``shm.board`` hands them to ``workers.accept``). A stale value costs balance, never
correctness.
Owns: that layout and the seqlock protocol.
Must not: decide policy (who waits for whom, what to retain).
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass
from typing import Any

from shm.errors import ShmError

MAGIC = b"PAVISCTL"
VERSION = 3  # the control block's layout: bump it when the header or a slot changes shape
HEADER = struct.Struct("<8sIIQQQQq8s")
SLOT = struct.Struct("<QB7xqQ16sdQQH120s62x")
assert HEADER.size == 64 and SLOT.size == 256
REASON_MAX = 120
STATS_SIZE = 16384
STATS_MAX = STATS_SIZE - 16
_STATS_LEN = struct.Struct("<I")
_SEQ = struct.Struct("<Q")
_HDR_BODY = struct.Struct("<QQQq")  # current, previous, high-water, pid — at offset 24
_SLOT_BODY = struct.Struct("<B7xqQ16sdQQH120s")  # everything after the slot's sequence
_ZERO16 = bytes(16)
CONNS_OFF = 200  # within a slot
ACCEPTED_OFF = 208  # within a slot: the word after the count
NO_WORKER = (1 << 64) - 1  # the connection count of a slot without a worker
_CONNS = struct.Struct("<Q")
# A writer that died between its two sequence bumps leaves an odd sequence forever: readers
# give up after TORN_AFTER if the writer is dead. A live writer may merely be descheduled
# mid-update on a loaded machine: then readers wait, up to the patience of each region.
TORN_AFTER = 0.1
HEADER_PATIENCE = 5.0
SLOT_PATIENCE = 1.0


@dataclass(frozen=True)
class SlotInfo:
    """One worker slot as last written by its worker (a consistent snapshot)."""

    slot: int
    pid: int
    generation: int
    digest: bytes
    heartbeat: float
    requests: int
    rejected_generation: int
    reason: str
    open: bool = True
    consistent: bool = True  # False: a writer died mid-update, fields may be torn


@dataclass(frozen=True)
class Header:
    current: int
    previous: int
    high_water: int
    supervisor_pid: int


def size(slots: int) -> int:
    return HEADER.size + (SLOT.size + STATS_SIZE) * slots


def init(m: mmap.mmap, slots: int, high_water: int, pid: int) -> None:
    HEADER.pack_into(m, 0, MAGIC, VERSION, slots, 0, 0, 0, high_water, pid, bytes(8))
    for slot in range(slots):
        _CONNS.pack_into(m, _slot_off(slot) + CONNS_OFF, NO_WORKER)


def check(m: mmap.mmap, versions: tuple[int, ...] = (VERSION,)) -> int:
    """Validate the magic and version (one of ``versions``); return the number of slots."""
    if len(m) < HEADER.size:
        raise ShmError("truncated", "control block is shorter than its header")
    magic, version, slots = struct.unpack_from("<8sII", m, 0)
    if magic != MAGIC:
        raise ShmError("bad_magic", f"control block magic {magic!r}")
    if version not in versions:
        raise ShmError("unsupported_version", f"control block layout version {version}")
    if len(m) < size(slots):
        raise ShmError("truncated", f"control block too short for {slots} slots")
    return int(slots)


def _begin(m: mmap.mmap, off: int) -> int:
    (seq,) = _SEQ.unpack_from(m, off)
    seq |= 1  # an odd sequence left by a dead writer is simply continued
    _SEQ.pack_into(m, off, seq)
    return int(seq)


def _end(m: mmap.mmap, off: int, seq: int) -> None:
    _SEQ.pack_into(m, off, seq + 1)


def _read(
    m: mmap.mmap, off: int, body: struct.Struct, patience: float, pid_field: int
) -> tuple[tuple[Any, ...], bool]:
    """Seqlock read of ``body`` just after the sequence at ``off``; (fields, consistent).

    ``pid_field`` is the index in ``body`` of the writer's pid, to tell a dead writer from a
    slow one.
    """
    started = 0.0
    spins = 0
    pause = 0.0
    while True:
        (s1,) = _SEQ.unpack_from(m, off)
        fields = body.unpack_from(m, off + 8)
        (s2,) = _SEQ.unpack_from(m, off)
        if s1 == s2 and not s1 & 1:
            return fields, True
        spins += 1
        if spins < 64:
            continue
        now = time.monotonic()
        if not started:
            started = now
        elif now - started > TORN_AFTER and (
            now - started > patience or not alive(int(fields[pid_field]))
        ):
            return fields, False
        time.sleep(pause)  # let the writer run (cooperative under gevent's patched sleep)
        pause = min(pause * 2 or 0.00005, 0.001)


def alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie (dead, not yet reaped); False for pid <= 0."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False  # a torn pid field
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself contain ')'.
    end = stat.rfind(b")")
    return stat[end + 2 : end + 3] not in (b"Z", b"X")


def write_header(m: mmap.mmap, current: int, previous: int, high_water: int, pid: int) -> None:
    seq = _begin(m, 16)
    _HDR_BODY.pack_into(m, 24, current, previous, high_water, pid)
    _end(m, 16, seq)


def read_header(m: mmap.mmap) -> Header:
    fields, ok = _read(m, 16, _HDR_BODY, HEADER_PATIENCE, 3)
    if not ok:
        raise ShmError("torn", "the control block header stays mid-update (supervisor died?)")
    current, previous, high_water, pid = fields
    return Header(int(current), int(previous), int(high_water), int(pid))


def _slot_off(slot: int) -> int:
    return HEADER.size + SLOT.size * slot


def reset_slot(m: mmap.mmap, slot: int, is_open: bool) -> None:
    off = _slot_off(slot)
    seq = _begin(m, off)
    _SLOT_BODY.pack_into(m, off + 8, int(is_open), 0, 0, _ZERO16, 0.0, 0, 0, 0, b"")
    _end(m, off, seq)
    _CONNS.pack_into(m, off + CONNS_OFF, NO_WORKER)  # until a worker counts its own
    _CONNS.pack_into(m, off + ACCEPTED_OFF, 0)
    # A new worker in this slot starts with no stats: its predecessor's are not its own.
    off = _stats_off(m, slot)
    seq = _begin(m, off)
    _STATS_LEN.pack_into(m, off + 8, 0)
    _end(m, off, seq)


def read_slot(m: mmap.mmap, slot: int) -> SlotInfo:
    fields, ok = _read(m, _slot_off(slot), _SLOT_BODY, SLOT_PATIENCE, 1)
    is_open, pid, gen, digest, hb, requests, rejected, rlen, reason = fields
    text = bytes(reason[: min(int(rlen), REASON_MAX)]).decode("utf-8", "replace")
    return SlotInfo(
        slot,
        pid,
        gen,
        bytes(digest),
        hb,
        requests,
        rejected,
        text,
        bool(is_open),
        ok,
    )


def update_slot(
    m: mmap.mmap,
    slot: int,
    *,
    pid: int | None = None,
    generation: int | None = None,
    digest: bytes | None = None,
    heartbeat: float | None = None,
    requests: int | None = None,
    rejected_generation: int | None = None,
    reason: str | None = None,
) -> None:
    """Rewrite the given fields of one slot (single writer: the worker that owns it)."""
    off = _slot_off(slot)
    # The single writer reads its own fields directly: no seqlock needed, and no stall when a
    # dead predecessor left the sequence odd.
    old = _SLOT_BODY.unpack_from(m, off + 8)
    is_open, o_pid, o_gen, o_digest, o_hb, o_req, o_rej, o_rlen, o_reason = old
    if reason is not None:
        raw = _truncate_utf8(reason, REASON_MAX)
        o_rlen, o_reason = len(raw), raw
    if digest is not None and len(digest) != 16:
        raise ValueError("digest must be 16 bytes")
    seq = _begin(m, off)
    _SLOT_BODY.pack_into(
        m,
        off + 8,
        is_open,
        o_pid if pid is None else pid,
        o_gen if generation is None else generation,
        o_digest if digest is None else digest,
        o_hb if heartbeat is None else heartbeat,
        o_req if requests is None else requests,
        o_rej if rejected_generation is None else rejected_generation,
        o_rlen,
        o_reason,
    )
    _end(m, off, seq)


def conns_index(slot: int) -> int:
    """Where the connection count of ``slot`` is in the control block seen as 8-byte words
    (``memoryview(m).cast("Q")``: a native-endian view, and this layout is little-endian,
    as every machine pavis runs on is)."""
    return (_slot_off(slot) + CONNS_OFF) // 8


def read_conns(m: mmap.mmap, slot: int) -> int:
    """The connection count of ``slot`` (NO_WORKER: none); for tools and tests."""
    return int(_CONNS.unpack_from(m, _slot_off(slot) + CONNS_OFF)[0])


def read_accepted(m: mmap.mmap, slot: int) -> int:
    """The accepted total of ``slot``: the word after its count (``conns_index(slot) + 1``)."""
    return int(_CONNS.unpack_from(m, _slot_off(slot) + ACCEPTED_OFF)[0])


def _stats_off(m: mmap.mmap, slot: int) -> int:
    nslots = struct.unpack_from("<I", m, 12)[0]
    return HEADER.size + SLOT.size * int(nslots) + STATS_SIZE * slot


def write_stats(m: mmap.mmap, slot: int, data: bytes) -> None:
    """Replace the stats area of ``slot`` (single writer: its worker)."""
    if len(data) > STATS_MAX:
        raise ValueError(f"stats of {len(data)} bytes exceed the {STATS_MAX}-byte area")
    off = _stats_off(m, slot)
    seq = _begin(m, off)
    _STATS_LEN.pack_into(m, off + 8, len(data))
    m[off + 16 : off + 16 + len(data)] = data
    _end(m, off, seq)


def read_stats(m: mmap.mmap, slot: int) -> tuple[bytes, bool]:
    """Seqlock read of the stats area of ``slot``: (data, consistent); b"" if never written."""
    off = _stats_off(m, slot)
    deadline = 0.0
    spins = 0
    while True:
        (s1,) = _SEQ.unpack_from(m, off)
        (n,) = _STATS_LEN.unpack_from(m, off + 8)
        data = m[off + 16 : off + 16 + min(int(n), STATS_MAX)]
        (s2,) = _SEQ.unpack_from(m, off)
        if s1 == s2 and not s1 & 1:
            return data, True
        spins += 1
        if spins < 64:
            continue
        now = time.monotonic()
        if not deadline:
            deadline = now + TORN_AFTER
        elif now > deadline:
            return b"", False  # a writer died mid-update: torn bytes are worth nothing
        time.sleep(0)


def _truncate_utf8(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw
    # Cut on a character boundary so the stored reason always decodes.
    return raw[:limit].decode("utf-8", "ignore").encode("utf-8")
