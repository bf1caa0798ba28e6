"""Locust scenario: a slow upstream next to fast requests on the same proxy.

    locust -f loadtest/locustfile_slow.py --headless -u 60 -r 20 -t 30s \
        --csv bench-results/slow --host http://127.0.0.1:8080

Needs a proxy whose catch-all route forwards to the test upstream (``tests/upstream.py``), e.g.
``examples/demo.yaml`` with ``python -m tests.upstream --port 8081`` in place of the demo
upstream. One user in four asks ``/delay/<ms>`` (``PAVIS_SLOW_MS``, default 500; the upstream
sleeps that long); the others ask the cheap ``/bytes3``. The fast requests' percentiles in the
CSV show whether slow upstream requests hold up anything else (they should not: each request
is its own greenlet in a pavis worker).
Owns: the traffic mix. Must not: start the proxy or the upstream.
"""

from __future__ import annotations

import os

from locust import FastHttpUser, between, task

SLOW_MS = int(os.environ.get("PAVIS_SLOW_MS", "500"))


class SlowUpstreamUser(FastHttpUser):
    weight = 1
    wait_time = between(0.0, 0.05)

    @task
    def slow(self) -> None:
        self.client.get(f"/delay/{SLOW_MS}", name=f"/delay/{SLOW_MS}")


class FastUser(FastHttpUser):
    weight = 3
    wait_time = between(0.0, 0.01)

    @task
    def fast(self) -> None:
        self.client.get("/bytes3", name="/bytes3")
