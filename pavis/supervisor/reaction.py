"""The instance's reaction-state segment: rate-limit buckets shared by every worker.

Owns: creating ``/pavis.<name>.rl`` (``shm.buckets``) once per instance — before the first
generation that has a rate limit is published (an instance without limits has none, and
spends no /dev/shm on it), so a worker flipping to that generation finds it — keeping it
across reloads and rollbacks (a limit whose parameters did not change keeps its clients'
state: a reload must not hand every client a new burst); reading its counters for
``/metrics``; unlinking it at stop. Must not: decide anything about requests (workers do).

Its size is fixed: ``KEYS`` keys (about 1 MiB). When the bucket a key hashes to holds only
live keys, the request passes and is counted untracked (docs/RATE_LIMITING.md).
"""

from __future__ import annotations

import posix_ipc  # type: ignore[import-not-found]  # no stubs published

from pavis.artifact import Head
from pavis.schema import Model
from shm import Publisher, ShmError, buckets, names

KEYS = 65536  # keys tracked at once, over every limit of the instance
WAYS = 8  # keys per bucket: a bucket is full when 8 live keys hash to it


class Reaction:
    """The open segment of one supervisor (``open``)."""

    def __init__(self, name: str, segment: buckets.Buckets) -> None:
        self.name = name
        self._segment: buckets.Buckets | None = segment
        self._keys = segment.keys

    @property
    def keys(self) -> int:
        return self._keys

    def counters(self) -> tuple[int, int]:
        """(untracked, reclaimed) since the instance started; zeros once closed."""
        seg = self._segment
        return seg.counters() if seg is not None else (0, 0)

    def close(self) -> None:
        """Unmap and unlink (the supervisor stops)."""
        seg, self._segment = self._segment, None
        if seg is not None:
            seg.close()
            buckets.unlink(self.name)


def open_segment(name: str, mode: int, gid: int | None) -> Reaction:
    """Create and map ``/pavis.<name>.rl``. Call after the Publisher reclaimed this user's
    leftovers: a segment still there then belongs to another user (ShmError "hostile")."""
    try:
        buckets.create(name, KEYS, mode, gid, ways=WAYS)
    except posix_ipc.ExistentialError:
        raise ShmError(
            "hostile",
            f"{names.SHM_DIR}{names.buckets(name)} exists and is not this user's: refusing to "
            "share rate-limit state with it. Remove it as root, or give this instance another "
            "--name",
        ) from None
    except OSError as exc:
        raise ShmError("no_space", f"cannot create the rate-limit segment: {exc}") from None
    try:
        return Reaction(name, buckets.attach(name))
    except BaseException:
        buckets.unlink(name)
        raise


def limited(head: Head | Model) -> bool:
    """Whether any virtual host or route of the generation has a rate limit (the compiler
    counts them into its limits, so the head says)."""
    return head.limits.rate_limits > 0


def reaction_for(model: Head | Model, current: Reaction | None, pub: Publisher) -> Reaction | None:
    """The segment ``model`` needs: ``current``, or a new one if ``model`` is the first
    generation with a limit (ShmError "no_space" if /dev/shm cannot hold it: that generation
    is then refused like one that does not fit)."""
    if current is not None or not limited(model):
        return current
    return open_segment(pub.name, pub.mode, pub.gid)
