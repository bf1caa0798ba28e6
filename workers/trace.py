"""W3C Trace Context on the request path: which trace a request belongs to, and the
``traceparent`` it carries upstream.

Owns: ``Trace`` (the ids of one request's trace), parsing a ``traceparent`` value by the
W3C rules (version 00 exactly; a later version by its first four fields; ``ff``, upper-case
hex and all-zero ids are invalid), and ``Tracer`` — one per generation with ``tracing``
configured — which continues a valid incoming trace or starts a new one, rewriting the
request's ``traceparent`` / ``tracestate`` fields in place before they are copied upstream.
Sampling of the traces pavis starts is decided from the trace id alone (its low 64 bits
against ``sample * 2**64``, as OpenTelemetry's TraceIdRatioBased sampler), so every hop
that samples by ratio agrees; an incoming trace keeps the sampled flag it came with.
Must not: export anything (``workers.otlp``), import gevent, or learn: the same header and
config always give the same decision, except for the random ids of a new trace or span.
"""

from __future__ import annotations

import random
import re

from pavis.schema import Otlp, Tracing

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
_FORMAT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
_LOW64 = (1 << 64) - 1
_rand = random.getrandbits  # reseeded in every forked child by the random module itself


class Trace:
    """The trace of one request. ``span_id``: pavis's own span (b"" when pavis records no
    span and forwards the client's ``traceparent`` unchanged); ``parent_id``: the span the
    client named (b"" for a trace pavis started)."""

    __slots__ = ("trace_id", "span_id", "parent_id", "sampled")

    def __init__(self, trace_id: bytes, span_id: bytes, parent_id: bytes, sampled: bool) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.sampled = sampled


def parse(value: bytes) -> tuple[bytes, bytes, bool] | None:
    """(trace id, parent id, sampled) of a valid ``traceparent`` value; None if invalid."""
    m = _FORMAT.match(value)
    if m is None:
        return None
    version = m.group(1)
    if version == b"ff":
        return None
    if len(value) != 55 and (version == b"00" or value[55:56] != b"-"):
        return None  # version 00 has exactly four fields; a later one may add "-..." fields
    trace_id, parent_id = m.group(2), m.group(3)
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, bool(int(m.group(4), 16) & 1)


def incoming_trace_id(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The trace id of the one valid ``traceparent`` in ``headers``; b"" if none (for the
    access log when pavis takes no part in traces)."""
    found = b""
    count = 0
    for name, value in headers:
        if len(name) == 11 and name.lower() == TRACEPARENT:
            count += 1
            found = value
    if count != 1:
        return b""
    parsed = parse(found)
    return parsed[0] if parsed is not None else b""


def new_span_id() -> bytes:
    return b"%016x" % (_rand(64) or 1)


class Tracer:
    """A generation's tracing policy, applied to each request's header fields."""

    __slots__ = ("config", "generate", "bound", "own_span", "exporter")

    def __init__(self, config: Tracing) -> None:
        self.config = config
        self.generate = config.generate
        self.bound = round(config.sample * (1 << 64))  # sampled: low 64 bits below this
        # pavis puts its own span between client and upstream only when it reports that
        # span: an unreported parent id would cut the upstream's spans off the client's.
        self.exporter: Otlp | None = config.exporter if isinstance(config.exporter, Otlp) else None
        self.own_span = self.exporter is not None

    def begin(self, headers: list[tuple[bytes, bytes]]) -> Trace | None:
        """The trace of a request with these header fields, which are rewritten as they
        are to be sent upstream: a valid ``traceparent`` is kept (with pavis's span id as
        its parent id when pavis records a span); an absent or invalid one (or more than
        one) is dropped with every ``tracestate`` and, if ``generate``, replaced by a new
        trace. None: the request belongs to no trace."""
        at = -1
        count = 0
        states = 0
        for i, (name, _value) in enumerate(headers):
            n = len(name)
            if n == 11 and name.lower() == TRACEPARENT:
                at = i
                count += 1
            elif n == 10 and name.lower() == TRACESTATE:
                states += 1
        parsed = parse(headers[at][1]) if count == 1 else None
        if parsed is not None:
            trace_id, parent_id, sampled = parsed
            if not self.own_span:
                return Trace(trace_id, b"", parent_id, sampled)
            span_id = new_span_id()
            value = b"00-%s-%s-%s" % (trace_id, span_id, b"01" if sampled else b"00")
            headers[at] = (headers[at][0], value)
            return Trace(trace_id, span_id, parent_id, sampled)
        if count or states:
            headers[:] = [(n, v) for n, v in headers if n.lower() not in (TRACEPARENT, TRACESTATE)]
        if not self.generate:
            return None
        bits = _rand(128) or 1
        trace_id = b"%032x" % bits
        sampled = (bits & _LOW64) < self.bound
        span_id = new_span_id()
        headers.append(
            (TRACEPARENT, b"00-%s-%s-%s" % (trace_id, span_id, b"01" if sampled else b"00"))
        )
        return Trace(trace_id, span_id, b"", sampled)
