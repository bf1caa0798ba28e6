"""Following the fleet's host reports as they change: what a publisher waits on.

Owns: reading every live host report (``hosts/``) at one revision, then watching that range
from the next revision and applying its events, so a waiter sees each change as soon as
etcd commits it instead of on its next poll, and misses none (a watch etcd cancels, one
that idles or a lost one leads to reading the range again). Shared by ``pavctl publish --wait``, canaries and the benchmark.
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
    revision = 0  # 0: read the range again
    reports: dict[str, HostReport] = {}
    while True:
        if not revision:
            found, revision = store.hosts_at()
            reports = {r.host_id: r for r in found}
        yield dict(reports)
        left = until - time.monotonic()
        if left <= 0:
            return
        # One stream for as long as it brings events: re-opening one from a past revision
        # would wait for etcd's next history sync (up to 100 ms).
        stream = watch.follow(hosts, prefix_end(hosts), revision + 1, min(left, idle))
        try:
            for outcome in stream:
                if outcome != "changed":
                    break
                # The events bring the reports to their revision (one revision's events come
                # whole).
                for deleted, entry in watch.changes:
                    if deleted:
                        reports.pop(entry.key.removeprefix(hosts), None)
                    else:
                        report = store.host_report(entry)
                        reports[report.host_id] = report
                revision = watch.revision
                yield dict(reports)
                if time.monotonic() >= until:
                    return
        except PavisError:  # etcd lost: the next read tries every endpoint, or raises
            time.sleep(min(0.2, max(0.0, until - time.monotonic())))
        finally:
            stream.close()
        revision = 0  # the stream ended (idle, cancelled, lost): read again
