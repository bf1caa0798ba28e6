"""One ``rate_limit`` of a route or a virtual host, compiled (docs/RATE_LIMITING.md).

Owns: the rate syntax (``N/s``, ``N/m``, ``N/h``), the defaults (``burst`` = N, key
``client_ip``, no delay, no dry run), the limit's identity (``limit_id``) and the
``RateLimit-Policy`` field value the worker sends with a 429, and every problem of the field,
with its path. Must not: know the bucket segment (the worker does) or decide anything at
request time.

The identity is a digest of what the limit counts and how — virtual host, route, rate, burst,
key — and nothing else: the same limit written with its fields in another order, in another
syntax, or with ``delay``/``dry_run`` changed, keeps its id, so a reload keeps its clients'
state; a limit with another rate, burst or key gets a new id and starts fresh.
"""

from __future__ import annotations

import hashlib
import math
import re

import msgspec

from pavis.compiler import fields
from pavis.compiler.intent import RateLimitKeyHeader, RateLimitSpec
from pavis.compiler.values import Values
from pavis.schema import RateLimit, RateLimitOff

_RATE = re.compile(r"\s*([0-9]{1,10})\s*/\s*(s|m|h)\s*")
_PERIOD_NS = {"s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
MAX_BURST = 1_000_000
_OFF = RateLimitOff()
_ID_ENCODER = msgspec.msgpack.Encoder()


def parse_rate(text: str) -> tuple[int, str] | str:
    """``"10/s"`` → (10, "s"); a reason string when the text is not a rate."""
    m = _RATE.fullmatch(text)
    if m is None:
        return f"{text!r} is not a rate: write N/s, N/m or N/h (e.g. 10/s)"
    count = int(m.group(1))
    if count < 1:
        return f"{text!r}: the count must be at least 1"
    if count > _PERIOD_NS[m.group(2)]:
        return f"{text!r}: more than one request per nanosecond"
    return count, m.group(2)


def limit_id(vhost: str, route: str, rate: str, burst: int, key: str, header: str) -> bytes:
    """16 bytes naming what a limit counts and how (see the module docstring)."""
    data = _ID_ENCODER.encode(("pavis-rl-1", vhost, route, rate, burst, key, header))
    return hashlib.blake2b(data, digest_size=16).digest()


def policy_field(name: str, burst: int, interval_ns: int) -> str:
    """The ``RateLimit-Policy`` value (draft-ietf-httpapi-ratelimit-headers): quota ``q``
    = the burst, window ``w`` = the seconds an exhausted burst takes to refill."""
    window = max(1, math.ceil(burst * interval_ns / 1_000_000_000))
    return f'"{name}";q={burst};w={window}'


def compile_limit(
    values: Values, spec: RateLimitSpec | None, path: str, vhost: str, route: str
) -> RateLimitOff | RateLimit:
    """``spec`` (at ``path``) as the runtime model's limit; ``route`` is "" for a virtual
    host's own limit. Problems are added to ``values``; a placeholder stands in for a bad
    value so that every problem of the file is reported at once."""
    if spec is None:
        return _OFF
    parsed = parse_rate(spec.rate)
    if isinstance(parsed, str):
        values.add(f"{path}.rate", "invalid_rate", parsed)
        parsed = (1, "s")
    count, unit = parsed
    interval_ns = _PERIOD_NS[unit] // count
    burst = count if spec.burst is None else spec.burst
    if not 1 <= burst <= MAX_BURST:
        values.add(f"{path}.burst", "out_of_range", f"{burst} is not in 1-{MAX_BURST}")
        burst = 1
    key: str
    header = ""
    if isinstance(spec.key, RateLimitKeyHeader):
        key = "header"
        header = spec.key.header.lower()
        problems = values.problems
        fields.header_name(f"{path}.key.header", spec.key.header, problems)
    else:
        key = spec.key
    rate = f"{count}/{unit}"
    return RateLimit(
        limit_id=limit_id(vhost, route, rate, burst, key, header),
        rate=rate,
        interval_ns=interval_ns,
        burst=burst,
        key=key,  # type: ignore[arg-type]
        header=header,
        delay=spec.delay,
        dry_run=spec.dry_run,
        policy=policy_field("route" if route else "virtual_host", burst, interval_ns),
    )
