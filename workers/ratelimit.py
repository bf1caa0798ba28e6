"""Local rate limiting on the request path (docs/RATE_LIMITING.md).

Owns: ``LimitRT`` (one compiled ``schema.RateLimit`` as the request path reads it, with its
decision counters), ``limits_of`` (a route's limits: its virtual host's first, then its own),
``check`` (a request's key under each limit, the decision in the shared bucket segment, the
wait of the delayed mode) and the header fields of a 429 (``Retry-After``,
``RateLimit-Policy``, ``RateLimit``). Must not: interpret configuration (every parameter is
the artifact's), build the response head (``workers.heads``) or write to the client
(``workers.conn`` answers).

A route without a limit never enters this module: ``RouteRT.limits`` is an empty tuple.
"""

from __future__ import annotations

import sys

import gevent

from pavis import stats
from pavis.schema import RateLimit, RateLimitOff
from shm import buckets
from shm.buckets import Buckets
from shm.errors import ShmError
from workers.metrics import METRICS
from workers.request import Request

# Decision indices, in rank order: a request under two limits logs the higher one.
ALLOWED, UNKEYED, UNTRACKED, DELAYED, DRY_RUN, REJECTED = range(len(stats.RL_DECISIONS))
_ROUTE_KEY = b"route"  # one bucket for the whole route (or virtual host)
_NS = 1_000_000_000


class LimitRT:
    """One limit, precomputed; ``counts`` are this worker's decision counters for it, kept
    across generations (``workers.metrics``)."""

    __slots__ = (
        "limit_id",
        "interval_ns",
        "burst",
        "kind",
        "header",
        "delay",
        "dry_run",
        "policy",
        "label",
        "counts",
    )

    def __init__(self, rl: RateLimit, vhost: str, route: str) -> None:
        self.limit_id = rl.limit_id
        self.interval_ns = rl.interval_ns
        self.burst = rl.burst
        self.kind = rl.key
        self.header = rl.header
        self.delay = rl.delay
        self.dry_run = rl.dry_run
        self.policy = b"RateLimit-Policy: " + rl.policy.encode("ascii") + b"\r\n"
        self.label = rl.policy.split(";", 1)[0].encode("ascii")  # the quoted policy name
        self.counts = METRICS.rate_limit(vhost, route)


def limits_of(
    vhost: str, vhost_limit: RateLimitOff | RateLimit, route: str, limit: RateLimitOff | RateLimit
) -> tuple[LimitRT, ...]:
    """The limits a request of this route passes, in order: the virtual host's, the route's."""
    out: list[LimitRT] = []
    if isinstance(vhost_limit, RateLimit):
        out.append(LimitRT(vhost_limit, vhost, ""))
    if isinstance(limit, RateLimit):
        out.append(LimitRT(limit, vhost, route))
    return tuple(out)


def _key(lim: LimitRT, client_ip: bytes, req: Request) -> bytes:
    kind = lim.kind
    if kind == "client_ip":
        return client_ip
    if kind == "route":
        return _ROUTE_KEY
    value = req.get(lim.header)
    return value.encode("latin-1") if value else b""


def check(
    buckets: Buckets | None, client_ip: bytes, req: Request, limits: tuple[LimitRT, ...]
) -> tuple[str, bytes]:
    """Decide ``req`` under each of ``limits``: (the decision's name, for the access log;
    the header fields of the 429 to answer, or b"" to go on). A delayed request has waited
    (cooperatively) before this returns. Without a segment (it could not be attached) every
    request passes, counted ``untracked``."""
    decision = ALLOWED
    for lim in limits:
        key = _key(lim, client_ip, req)
        if not key:
            # An empty key is not limited, as in nginx's limit_req: a request without the
            # key's header is left to the other limits.
            d = UNKEYED
        elif buckets is None:
            d = UNTRACKED
        else:
            v = buckets.take(lim.limit_id, key, lim.interval_ns, lim.burst)
            if not v.tracked:
                d = UNTRACKED
            elif not v.allowed:
                if not lim.dry_run:
                    lim.counts[REJECTED] += 1
                    return stats.RL_DECISIONS[REJECTED], refusal(lim, v.retry_after_ns, v.reset_ns)
                d = DRY_RUN
            elif lim.delay and v.wait_ns > 0 and not lim.dry_run:
                d = DELAYED
                gevent.sleep(v.wait_ns / _NS)
            else:
                d = ALLOWED
        lim.counts[d] += 1
        decision = max(decision, d)
    return stats.RL_DECISIONS[decision], b""


def _seconds(ns: int) -> int:
    """Whole seconds, rounded up (a client told 0 would retry at once)."""
    return max(1, -(-ns // _NS))


def refusal(lim: LimitRT, retry_after_ns: int, reset_ns: int) -> bytes:
    """The header fields of a 429 for ``lim``: when to retry, the policy, and the key's state
    now (draft-ietf-httpapi-ratelimit-headers: ``r`` requests remaining, ``t`` seconds until
    the whole quota is back)."""
    return b"Retry-After: %d\r\n%sRateLimit: %s;r=0;t=%d\r\n" % (
        _seconds(retry_after_ns),
        lim.policy,
        lim.label,
        _seconds(reset_ns),
    )


def attach(name: str) -> Buckets | None:
    """The instance's bucket segment mapped for this worker, or None when it cannot be:
    limits then let every request through, counted ``untracked``. Said on stderr unless the
    segment is simply absent (a worker run by a bare ``shm.Publisher``, not a supervisor)."""
    try:
        return buckets.attach(name)
    except ShmError as exc:
        if exc.reason == "missing":
            return None
        print(
            f"pavis worker: rate limits are not enforced: {exc}; requests under a limit "
            "pass and are counted untracked",
            file=sys.stderr,
        )
        return None
