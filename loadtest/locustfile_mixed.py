"""Locust scenario: steady mixed traffic over every route of a pavis configuration.

    locust -f loadtest/locustfile_mixed.py --headless -u 50 -r 10 -t 30s \
        --csv bench-results/mixed --host http://127.0.0.1:8080

Each user picks a route of ``PAVIS_CONFIG`` (default ``examples/demo.yaml``) at random and
sends the request ``loadtest.locust_common`` derived for it (host, method, path, headers), plus
one request in ten to a path no route matches. A response counts as a failure unless it is
what a correct proxy answers: the route's own status for ``direct``/``redirect`` routes,
below 500 for ``forward`` routes, 404 for the miss. Redirects are not followed.
Owns: the traffic mix. Must not: start or reload the proxy (docs/bench/locust.md shows how).
"""

from __future__ import annotations

import random

from locust import FastHttpUser, between, task

from loadtest.locust_common import Target, status_ok, targets

TARGETS = targets()
# With a catch-all "*" virtual host an unknown host is routed there, and its routes decide
# (a "/" prefix route forwards it): then any answer below 500 is right; else 404.
_CATCH_ALL = any(t.host == "anything.test" for t in TARGETS)
MISS = Target(
    "miss", "GET", "anything.test" if _CATCH_ALL else "no-such-host.invalid",
    "/no/such/route", {}, () if _CATCH_ALL else (404,),
)  # fmt: skip


def send(user: FastHttpUser, t: Target) -> None:
    headers = {"Host": t.host, **t.headers}
    with user.client.request(
        t.method, t.path, name=t.name, headers=headers, catch_response=True,
        allow_redirects=False,
    ) as resp:  # fmt: skip
        if status_ok(t, resp.status_code or 0):
            resp.success()
        else:
            resp.failure(f"{t.name}: status {resp.status_code}, expected {t.expect or '<500'}")


class MixedUser(FastHttpUser):
    wait_time = between(0.0, 0.01)

    @task(9)
    def route(self) -> None:
        send(self, random.choice(TARGETS))

    @task(1)
    def miss(self) -> None:
        send(self, MISS)
