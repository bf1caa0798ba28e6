"""The load board: each worker's open client connections and accepted total, by slot.

Owns: ``LoadBoard``, the two views of the control block's per-slot connection words that a
worker's accept code reads and writes (``shm.control`` owns where they are). ``counts[i]``
is slot ``i``'s open connections (``NO_WORKER`` while it has no worker), ``accepted[i]``
its connections accepted in all. Plain aligned word stores and loads, no seqlock: a stale
value costs balance, never correctness. The policy that reads them is ``workers.accept``'s.
Must not: decide who accepts.
"""

from __future__ import annotations

import mmap

from shm import control
from shm.control import NO_WORKER

__all__ = ["NO_WORKER", "LoadBoard", "attach"]


class LoadBoard:
    """``counts`` and ``accepted``: indexed by slot; ``slot``: the one this worker alone
    writes; ``others``: every other slot. Any two equal-length views of 8-byte words will
    do (a test's ``memoryview(bytearray(...)).cast("Q")`` slices)."""

    __slots__ = ("counts", "accepted", "slot", "others")

    def __init__(self, counts: memoryview, accepted: memoryview, slot: int, others: list[int]):
        self.counts = counts
        self.accepted = accepted
        self.slot = slot
        self.others = others

    def release(self) -> None:
        """Let the mapping close: the views are unusable afterwards."""
        self.counts.release()
        self.accepted.release()


def attach(ctl: mmap.mmap, slot: int, nslots: int) -> LoadBoard:
    """The board of a control block with ``nslots`` slots, for the worker in ``slot``, whose
    count and total start at 0."""
    words = memoryview(ctl).cast("Q")
    try:
        first = control.conns_index(0)
        step = control.conns_index(1) - first
        end = first + step * nslots
        counts = words[first:end:step]
        accepted = words[first + 1 : end + 1 : step]
    finally:
        words.release()  # the slices hold the mapping themselves
    counts[slot] = 0
    accepted[slot] = 0
    return LoadBoard(counts, accepted, slot, [i for i in range(nslots) if i != slot])
