"""A busy pool queues by default: more concurrent requests than connections wait their turn
(bounded by the cluster's connect_timeout), as nginx's and Envoy's defaults do, instead of
being refused with 503."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.e2e.helpers_worker import Workers, request, seal_yaml
from tests.helpers import one_cluster, unique_instance
from tests.upstream import launch


def test_requests_beyond_the_pool_wait_for_a_connection() -> None:
    up = launch("slow")
    try:
        with Workers(unique_instance(), 1) as w:
            # Only max_connections is written: every other pool field takes its default.
            cfg = one_cluster(w.port, up.address, cluster_extra="    pool: {max_connections: 2}\n")
            w.start(seal_yaml(cfg))
            with ThreadPoolExecutor(12) as ex:
                statuses = list(
                    ex.map(lambda i: request(w.port, "GET", f"/delay/100?i={i}")[0], range(12))
                )
            assert statuses == [200] * 12, statuses
    finally:
        up.stop()
