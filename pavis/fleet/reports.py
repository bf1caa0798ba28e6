"""Following the fleet's host reports as they change: what a publisher waits on.

Owns: reading every live host report (``hosts/``) at one revision, then watching that range
from the next revision, so a waiter sees each change as soon as etcd commits it instead of
on its next poll, and misses none (a watch etcd cancels, or one that idles, only leads to
reading the range again). Shared by ``pavctl publish --wait``, canaries and the benchmark.
Must not: decide what a report means (``pavis.fleet.status``, the callers), or write.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from pavis.errors import PavisError
from pavis.fleet.layout import HostReport
from pavis.fleet.store import Store, prefix_end
from pavis.fleet.watch import Watch

IDLE_S = 1.0  # a quiet watch is re-opened this often: callers also check clocks and leases


def follow_reports(
    store: Store, until: float, idle: float = IDLE_S
) -> Iterator[dict[str, HostReport]]:
    """The live reports by host id now, then again after every change (and at least every
    ``idle`` seconds) until the monotonic time ``until``, then once more, and it ends. A lost
    watch is re-opened (on the next endpoint); a read retries for the store's deadline, then
    raises."""
    watch = Watch(store)
    hosts = store.keys.hosts
    while True:
        reports, revision = store.hosts_at()
        yield {r.host_id: r for r in reports}
        left = until - time.monotonic()
        if left <= 0:
            return
        try:
            watch.wait(hosts, prefix_end(hosts), revision + 1, min(left, idle))
        except PavisError:  # etcd lost: the next read tries every endpoint, or raises
            time.sleep(min(0.2, max(0.0, until - time.monotonic())))
