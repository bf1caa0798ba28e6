"""The data-plane scenarios of ``python -m loadtest.bench_proxy`` and the goal they are judged by.

Owns: what each scenario sends (listener, path, connections, ``Connection: close``, request
body, idle connections held open meanwhile), which setup of proxies it runs on (worker count,
listeners, routes), and the goal against nginx: requests/s at least 0.85x nginx's, p99 at most
1.25x, CPU per request at most 1.4x (keep-alive) or 1.6x (a connection per request).
Must not: start processes, run wrk, or compute figures (``loadtest.dataplane`` runs,
``loadtest.dataplane_report`` summarises).
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20

# The goal, as ratios pavis / nginx within one round.
RPS_MIN = 0.85
P99_MAX = 1.25
CPU_MAX_KEEPALIVE = 1.4
CPU_MAX_CLOSE = 1.6

UPSTREAM_BODY = 3  # bytes of the upstream's answer to every path but the large ones


@dataclass(frozen=True)
class Setup:
    """One pair of proxies (pavis and nginx) the scenarios of that setup share."""

    name: str
    workers: int = 2
    # A TLS listener (one certificate) and an SNI listener (two). Setups of their own, so
    # that whatever one TLS scenario does to a proxy's workers stays out of the others.
    tls: bool = False
    idle: bool = False  # nginx: room for 10,000 more connections per worker
    rate_limit: bool = False  # a rate-limited route beside the plain one


SETUPS = {
    s.name: s
    for s in (
        Setup("main"),
        Setup("bodies"),  # its own pair: a client cut short mid-body must not touch ka*
        Setup("tls", tls=True),
        Setup("sni", tls=True),
        Setup("idle", idle=True),
        Setup("w4", workers=4),
        Setup("ratelimit", rate_limit=True),
    )
}


@dataclass(frozen=True)
class Scenario:
    name: str
    setup: str
    connections: int
    what: str
    listener: str = "plain"  # plain | tls | sni (TLS with the non-default certificate)
    path: str = "/"
    close: bool = False  # every request on a new connection (a handshake each over TLS)
    body_bytes: int = UPSTREAM_BODY  # response body size
    upload_bytes: int = 0  # request body size (POST)
    idle: int = 0  # keep-alive connections held open, idle, while the load runs
    plain_path: str = ""  # also measure each proxy on this path (the cost of a feature)

    @property
    def cpu_max(self) -> float:
        return CPU_MAX_CLOSE if self.close else CPU_MAX_KEEPALIVE

    @property
    def headers(self) -> tuple[str, ...]:
        return ("Connection: close",) if self.close else ()


SCENARIOS = (
    Scenario("ka10", "main", 10, "keep-alive, 10 connections"),
    Scenario("ka50", "main", 50, "keep-alive, 50 connections"),
    Scenario("ka100", "main", 100, "keep-alive, 100 connections"),
    Scenario("close50", "main", 50, "Connection: close, 50 connections", close=True),
    Scenario("tls-ka50", "tls", 50, "TLS 1.3, keep-alive, 50 connections", listener="tls"),
    Scenario(
        "tls-close50",
        "tls",
        50,
        "TLS 1.3, a handshake per request, 50 connections",
        listener="tls",
        close=True,
    ),
    Scenario(
        "sni-close50",
        "sni",
        50,
        "TLS 1.3, a handshake per request, certificate chosen by SNI (2 on the listener)",
        listener="sni",
        close=True,
    ),
    Scenario(
        "body64k",
        "bodies",
        50,
        "64 KiB responses, keep-alive, 50 connections",
        path="/64k",
        body_bytes=64 * 1024,
    ),
    Scenario(
        "body1m",
        "bodies",
        10,
        "1 MiB responses, keep-alive, 10 connections",
        path="/1m",
        body_bytes=MIB,
    ),
    Scenario(
        "upload10m",
        "bodies",
        10,
        "10 MiB POST bodies, keep-alive, 10 connections",
        path="/upload",
        upload_bytes=10 * MIB,
    ),
    Scenario(
        "idle10k",
        "idle",
        50,
        "keep-alive, 50 connections, 10,000 idle keep-alive ones held",
        idle=10_000,
    ),
    Scenario("w4-ka100", "w4", 100, "4 workers on 2 cores, keep-alive, 100 connections"),
    Scenario(
        "w4-close50",
        "w4",
        50,
        "4 workers on 2 cores, Connection: close, 50 connections",
        close=True,
    ),
    Scenario(
        "ratelimit",
        "ratelimit",
        50,
        "keep-alive, 50 connections, a route with a rate limit that never refuses",
        path="/rl/",
        plain_path="/",
    ),
)

BY_NAME = {s.name: s for s in SCENARIOS}


def select(names: str | None) -> tuple[Scenario, ...]:
    """The scenarios named (comma separated, in the canonical order); all when ``names`` is None.

    Raises ValueError naming every unknown name.
    """
    if names is None:
        return SCENARIOS
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(unknown)} (known: {', '.join(BY_NAME)})")
    return tuple(s for s in SCENARIOS if s.name in wanted)
