"""The access-log line in-process: hostile request values never break or forge a line, and
the fields computed from the request are what docs/CONFIG.md says.

Invariants: whatever bytes a client puts in a field the reader accepts, the line is one
line (also for readers that split on U+0085 / U+2028 / U+2029), it parses as JSON, and each
value reads back byte for byte (latin-1); ``request_bytes`` is the head as parsed plus the
body; ``protocol`` is empty for a head not read whole.
"""

from __future__ import annotations

import json

import pytest

from tests.unit.routes_inprocess import request, state_of
from workers import accesslog
from workers.accesslog import Exchange
from workers.request import Request

ROUTES = "      - {name: all, match: {prefix: /}, direct: {status: 200}}\n"
HOSTILE = [
    b'x" \\ "status": 500, "forged": "',  # quotes and backslashes
    b"a\x85b",  # NEL: a line break to str.splitlines
    b"\xe2\x80\xa8 \xe2\x80\xa9",  # the UTF-8 of LINE / PARAGRAPH SEPARATOR, as bytes
    b"\xff\xfe\xc3\x28 not utf-8",
    b'}\n{"forged": true}',  # a newline cannot come from the reader, nor pass here
    b"\t\x1b[31mred",  # a terminal escape
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_stay_on_one_line(value: bytes) -> None:
    state = state_of(ROUTES)
    req = request(b"GET", b"/x", (b"Host", b"a"), (b"User-Agent", value), (b"Referer", value))
    req.headers_done = True
    data = accesslog.line(Exchange(), req, state, "127.0.0.1")
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    text = data.decode("utf-8")
    assert len(text.splitlines()) == 1  # the strictest common line splitter
    assert not any(ord(c) < 0x20 for c in text[:-1])
    rec = json.loads(text)
    assert rec["user_agent"].encode("latin-1") == value
    assert rec["referer"].encode("latin-1") == value
    assert "forged" not in rec


def test_fields_from_the_request() -> None:
    state = state_of(ROUTES)
    req = request(b"POST", b"/up?q=1", (b"Host", b"a"), (b"Content-Length", b"3"))
    req.headers_done = True
    req.hbytes = sum(len(n) + len(v) + 4 for n, v in req.headers)
    req.body_bytes = 3
    rec = json.loads(accesslog.line(Exchange(), req, state, "127.0.0.1"))
    wire = b"POST /up?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    assert rec["request_bytes"] == len(wire)
    assert rec["protocol"] == "HTTP/1.1"
    assert (rec["user_agent"], rec["referer"], rec["trace_id"]) == ("", "", "")
    assert (rec["tls_version"], rec["sni"], rec["rate_limit"]) == ("-", "-", "-")
    assert (rec["upstream_status"], rec["upstream_address"]) == (0, "")

    rejected = Request()  # a head rejected before anything of it was read
    rec = json.loads(accesslog.line(Exchange(), rejected, state, "127.0.0.1"))
    assert (rec["protocol"], rec["request_bytes"]) == ("", 0)
