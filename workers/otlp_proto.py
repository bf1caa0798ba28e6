"""Spans as an OTLP ``ExportTraceServiceRequest`` (protobuf), for ``workers.otlp``.

Owns: the span's name, kind, status and attributes (OpenTelemetry's HTTP server semantic
conventions where one fits, ``pavis.*`` for the proxy's own facts) and the encoding.
Must not: be imported unless a span is to be sent: it needs opentelemetry-proto (the
``otel`` extra), which a worker without tracing never loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

if TYPE_CHECKING:
    from workers.otlp import Span as Record


def _str(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _int(key: str, value: int) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(int_value=value))


def _span(r: Record) -> Span:
    (trace_id, span_id, parent_id, start, end, method, host, target, route, cluster, status,
     up_status, up_address, attempts, client, proto, ua, request_id, error) = r  # fmt: skip
    m = method.decode("latin-1")
    path, _, query = target.decode("latin-1").partition("?")
    attrs = [
        _str("http.request.method", m),
        _str("url.path", path),
        _str("server.address", host.decode("latin-1")),
        _str("client.address", client),
        _int("http.response.status_code", status),
        _str("pavis.route", route),
        _str("pavis.request_id", request_id.decode("latin-1")),
    ]
    if query:
        attrs.append(_str("url.query", query))
    if proto:
        attrs.append(_str("network.protocol.version", proto.removeprefix("HTTP/")))
    if ua:
        attrs.append(_str("user_agent.original", ua.decode("latin-1")))
    if cluster:
        attrs.append(_str("pavis.cluster", cluster))
        attrs.append(_int("pavis.attempts", attempts))
    if up_address:
        attrs.append(_str("pavis.upstream.address", up_address))
    if up_status:
        attrs.append(_int("pavis.upstream.status_code", up_status))
    failed = status >= 500  # a server span's error: 5xx, not 4xx
    if failed:
        attrs.append(_str("error.type", str(status)))
    return Span(
        trace_id=bytes.fromhex(trace_id.decode()),
        span_id=bytes.fromhex(span_id.decode()),
        parent_span_id=bytes.fromhex(parent_id.decode()) if parent_id else b"",
        name=f"{m} {route}" if route else m,
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=attrs,
        status=Status(code=Status.STATUS_CODE_ERROR, message=error)
        if failed
        else Status(code=Status.STATUS_CODE_UNSET),
    )


def encode(batch: list[Record], service_name: str) -> bytes:
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[_str("service.name", service_name)]),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(name="pavis"),
                        spans=[_span(r) for r in batch],
                    )
                ],
            )
        ]
    )
    data: bytes = request.SerializeToString()
    return data
