"""W3C Trace Context in-process: which traceparent values are valid, what a generation's
tracing policy does to a request's trace fields, and the ``tracing`` section as compiled.

Invariants: a valid traceparent continues its trace (unchanged without an exporter, with
pavis's span id as parent id with one); an absent, invalid or repeated one is dropped with
every tracestate and, with ``generate``, replaced by a new trace; sampling of new traces is
the trace id's low 64 bits against ``sample * 2**64``; the compiler names each bad field.
"""

from __future__ import annotations

import pytest

from pavis import artifact
from pavis.compiler import compile_text
from pavis.errors import ConfigError
from pavis.schema import Otlp, OtlpOff, Tracing, TracingOff
from workers.state import load
from workers.trace import Tracer, incoming_trace_id, parse

TID = b"4bf92f3577b34da6a3ce929d0e0e4736"
PID = b"00f067aa0ba902b7"
VALID = b"00-" + TID + b"-" + PID + b"-01"


def test_valid_traceparents_parse() -> None:
    assert parse(VALID) == (TID, PID, True)
    assert parse(b"00-" + TID + b"-" + PID + b"-00") == (TID, PID, False)
    assert parse(b"00-" + TID + b"-" + PID + b"-03") == (TID, PID, True)  # other flags: kept bit
    # A later version is read by its first four fields, whatever follows a "-".
    assert parse(b"01-" + TID + b"-" + PID + b"-01-future") == (TID, PID, True)
    assert parse(b"cc-" + TID + b"-" + PID + b"-00") == (TID, PID, False)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"00",
        b"ff-" + TID + b"-" + PID + b"-01",  # version ff is forbidden
        b"00-" + TID.upper() + b"-" + PID + b"-01",  # upper-case hex
        b"00-" + b"0" * 32 + b"-" + PID + b"-01",  # all-zero trace id
        b"00-" + TID + b"-" + b"0" * 16 + b"-01",  # all-zero parent id
        b"00-" + TID + b"-" + PID + b"-01-extra",  # version 00 has exactly four fields
        b"01-" + TID + b"-" + PID + b"-01x",  # a later version's extra fields start with "-"
        b"00-" + TID[:-1] + b"-" + PID + b"-01",  # short trace id
        b"00-" + TID + b"-" + PID + b"-1",  # short flags
        b"00_" + TID + b"_" + PID + b"_01",
        b"0g-" + TID + b"-" + PID + b"-01",
        b" 00-" + TID + b"-" + PID + b"-01",
    ],
)
def test_invalid_traceparents_do_not(value: bytes) -> None:
    assert parse(value) is None


def tracer(generate: bool = True, sample: float = 1.0, otlp: bool = False) -> Tracer:
    exporter: Otlp | OtlpOff = Otlp("http://127.0.0.1:4318/v1/traces", 1000, 10, "pavis")
    return Tracer(Tracing(generate, sample, exporter if otlp else OtlpOff()))


def fields(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for n, v in headers if n.lower() == name]


def test_a_valid_trace_is_passed_on_unchanged_without_an_exporter() -> None:
    headers = [(b"Host", b"a"), (b"TraceParent", VALID), (b"tracestate", b"k=v")]
    tr = tracer().begin(headers)
    assert tr is not None and (tr.trace_id, tr.parent_id, tr.span_id) == (TID, PID, b"")
    assert headers == [(b"Host", b"a"), (b"TraceParent", VALID), (b"tracestate", b"k=v")]


def test_with_an_exporter_pavis_s_span_is_the_upstream_s_parent() -> None:
    headers = [(b"traceparent", b"00-" + TID + b"-" + PID + b"-00"), (b"tracestate", b"k=v")]
    tr = tracer(otlp=True).begin(headers)
    assert tr is not None and tr.trace_id == TID and tr.parent_id == PID and not tr.sampled
    assert len(tr.span_id) == 16 and tr.span_id != PID
    assert fields(headers, b"traceparent") == [b"00-" + TID + b"-" + tr.span_id + b"-00"]
    assert fields(headers, b"tracestate") == [b"k=v"]
    # A later version is answered in the version pavis writes.
    headers = [(b"traceparent", b"01-" + TID + b"-" + PID + b"-01-more")]
    tr = tracer(otlp=True).begin(headers)
    assert tr is not None and fields(headers, b"traceparent") == [
        b"00-" + TID + b"-" + tr.span_id + b"-01"
    ]


@pytest.mark.parametrize(
    "incoming",
    [
        [],
        [(b"traceparent", b"00-" + TID.upper() + b"-" + PID + b"-01")],
        [(b"traceparent", VALID), (b"traceparent", VALID)],  # more than one: invalid
        [(b"tracestate", b"k=v")],  # tracestate alone means nothing
    ],
)
def test_an_absent_or_invalid_trace_is_replaced(incoming: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"Host", b"a"), *incoming, (b"tracestate", b"a=b"), (b"X-Other", b"1")]
    tr = tracer().begin(headers)
    assert tr is not None and tr.parent_id == b"" and tr.sampled
    assert parse(fields(headers, b"traceparent")[0]) == (tr.trace_id, tr.span_id, True)
    assert fields(headers, b"tracestate") == []
    assert [n for n, _ in headers] == [b"Host", b"X-Other", b"traceparent"]
    assert incoming_trace_id(headers) == tr.trace_id

    headers = [(b"Host", b"a"), *incoming, (b"tracestate", b"a=b")]
    assert tracer(generate=False).begin(headers) is None
    assert headers == [(b"Host", b"a")]  # dropped, nothing generated


def test_sampling_is_decided_by_the_trace_id() -> None:
    assert all(not tracer(sample=0.0).begin([]).sampled for _ in range(200))  # type: ignore[union-attr]
    t = tracer(sample=0.5)
    seen = set()
    for _ in range(400):
        headers: list[tuple[bytes, bytes]] = []
        tr = t.begin(headers)
        assert tr is not None
        assert tr.sampled == (int(tr.trace_id[16:], 16) < 1 << 63)
        assert fields(headers, b"traceparent")[0].endswith(b"-01" if tr.sampled else b"-00")
        seen.add(tr.sampled)
    assert seen == {True, False}


def test_incoming_trace_id_is_the_valid_one_only() -> None:
    assert incoming_trace_id([(b"traceparent", VALID)]) == TID
    assert incoming_trace_id([(b"traceparent", b"00-zz")]) == b""
    assert incoming_trace_id([(b"traceparent", VALID), (b"traceparent", VALID)]) == b""
    assert incoming_trace_id([]) == b""


BASE = 'version: 1\nlisteners: [{name: public, address: "127.0.0.1:8080"}]\n'


def compiled(extra: str) -> object:
    return load(artifact.seal(compile_text(BASE + extra, "yaml")))[1].tracing


def test_tracing_compiles_with_its_defaults() -> None:
    assert compiled("") == TracingOff()
    assert compiled("tracing: {}\n") == Tracing(True, 1.0, OtlpOff())
    assert compiled("tracing: {generate: false, sample: 0, otlp: {}}\n") == Tracing(
        False, 0.0, Otlp("http://127.0.0.1:4318/v1/traces", 5000, 2048, "pavis")
    )
    got = compiled(
        'tracing: {sample: 0.25, otlp: {endpoint: "https://c.example:4318/v1/traces", '
        "timeout: 250ms, queue: 10, service_name: edge}}\n"
    )
    assert got == Tracing(True, 0.25, Otlp("https://c.example:4318/v1/traces", 250, 10, "edge"))


@pytest.mark.parametrize(
    ("tracing", "path", "constraint"),
    [
        ("{sample: 1.5}", "$.tracing.sample", "out_of_range"),
        ("{sample: -0.1}", "$.tracing.sample", "out_of_range"),
        ("{sample: yes}", "$.tracing.sample", "type_error"),
        ("{generate: 1}", "$.tracing.generate", "type_error"),
        ("{exporter: otlp}", "$.tracing.exporter", "unknown_field"),
        ('{otlp: {endpoint: "ftp://c:21/x"}}', "$.tracing.otlp.endpoint", "invalid_url"),
        ('{otlp: {endpoint: "http:///v1/traces"}}', "$.tracing.otlp.endpoint", "invalid_url"),
        ('{otlp: {endpoint: "http://c:99999/"}}', "$.tracing.otlp.endpoint", "invalid_url"),
        ("{otlp: {timeout: 5}}", "$.tracing.otlp.timeout", "type_error"),
        ("{otlp: {timeout: 0s}}", "$.tracing.otlp.timeout", "invalid_duration"),
        ("{otlp: {queue: 0}}", "$.tracing.otlp.queue", "out_of_range"),
        ('{otlp: {service_name: ""}}', "$.tracing.otlp.service_name", "invalid_value"),
    ],
)
def test_bad_tracing_is_named(tracing: str, path: str, constraint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_text(BASE + f"tracing: {tracing}\n", "yaml")
    assert (path, constraint) in {(p.path, p.constraint) for p in caught.value.problems}
