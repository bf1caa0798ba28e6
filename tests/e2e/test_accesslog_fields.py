"""The complete access log on real workers: the fields operators look for, hostile values,
and a destination that stops taking lines.

Invariants: protocol, user agent, referer, request bytes, upstream status and address, TLS
version and SNI are what the request and its connection were; a hostile User-Agent leaves
one parseable line per request; a FIFO nobody reads never holds up a request — lines beyond
``access_log.buffer`` are dropped and counted in ``pavis_access_log_dropped_total`` — and once
a reader appears lines flow again.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers_framing import exchange
from tests.e2e.helpers_proc import Serve, direct_config, get, wait_for
from tests.e2e.helpers_tls import self_signed
from tests.e2e.helpers_worker import Workers, raw, request, seal_yaml
from tests.helpers import one_cluster, unique_instance
from tests.upstream import Upstream, launch

CRLF = b"\r\n"


@pytest.fixture(scope="module")
def up() -> Iterator[Upstream]:
    u = launch("logged")
    try:
        yield u
    finally:
        u.stop()


def lines(log: Path, n: int) -> list[dict[str, Any]]:
    def enough() -> list[str] | None:
        text = log.read_text().splitlines() if log.exists() else []
        return text if len(text) >= n else None

    return [json.loads(x) for x in wait_for(enough, 10, f"{n} access-log lines")]


def test_request_and_upstream_fields(up: Upstream, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    extra = f'access_log: {{path: "{log}"}}\n'
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(one_cluster(w.port, up.address, extra=extra)))
        head = b"POST /upload HTTP/1.1\r\nHost: a\r\nUser-Agent: probe/2\r\nReferer: /from\r\n"
        body = b"x" * 100
        sent = head + b"Content-Length: 100\r\n\r\n" + body
        got, _ = exchange(w.port, sent, 1)
        assert [r.status for r in got] == [200]
        assert request(w.port, path="/status/503")[0] == 503
        assert b" 200 " in raw(w.port, b"GET /echo HTTP/1.0\r\nHost: a\r\n\r\n")
        recs = lines(log, 3)
    post, failed, old = recs
    assert post["protocol"] == "HTTP/1.1" and old["protocol"] == "HTTP/1.0"
    assert (post["user_agent"], post["referer"]) == ("probe/2", "/from")
    assert post["request_bytes"] == len(sent)
    assert (post["upstream_status"], post["upstream_address"]) == (200, up.address)
    assert (failed["status"], failed["upstream_status"]) == (503, 503)
    assert (post["tls_version"], post["sni"], post["rate_limit"]) == ("-", "-", "-")


def test_tls_version_and_sni(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    crt, key = self_signed(tmp_path, "edge.test")
    with Workers(unique_instance(), 1) as w:
        tls = f'tls: {{cert: "{crt}", key: "{key}"}}, address: '
        cfg = direct_config(w.port, "A").replace("address: ", tls, 1)
        w.start(seal_yaml(cfg + f'access_log: {{path: "{log}"}}\n'))
        ctx = ssl.create_default_context(cafile=str(crt))
        ctx.check_hostname = False
        for name in ("edge.test", None):  # None: an IP-literal connection sends no SNI
            with (
                socket.create_connection(("127.0.0.1", w.port), timeout=5) as sock,
                ctx.wrap_socket(sock, server_hostname=name) as tls,
            ):
                tls.sendall(b"GET / HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n")
                answer = b""
                while len(answer) < 12 and (data := tls.recv(100)):
                    answer += data
                assert answer.startswith(b"HTTP/1.1 200")
                version = tls.version()
        recs = lines(log, 2)
    assert [(r["tls_version"], r["sni"]) for r in recs] == [
        (version, "edge.test"),
        (version, ""),
    ]


# User-Agent values the reader accepts that a naive line writer would break on.
HOSTILE = [b'q" \\ "status": 500, "x": "', b"nel\x85break", b"\xff\xfe\xc3( bytes"]


def test_hostile_user_agents_leave_one_line_per_request(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(direct_config(w.port, "A") + f'access_log: {{path: "{log}"}}\n'))
        for value in HOSTILE:
            got, _ = exchange(w.port, b"GET /ua HTTP/1.1\r\nHost: a\r\nUser-Agent: " + value
                              + b"\r\nReferer: " + value + b"\r\n\r\n", 1)  # fmt: skip
            assert [r.status for r in got] == [200]
        recs = lines(log, len(HOSTILE))
        assert len(log.read_text().splitlines()) == len(HOSTILE)  # str.splitlines: the strictest
    assert [r["user_agent"].encode("latin-1") for r in recs] == HOSTILE
    assert [r["referer"].encode("latin-1") for r in recs] == HOSTILE
    assert all(r["status"] == 200 and r["path"] == "/ua" for r in recs)


def metric(sv: Serve, name: str) -> float:
    for line in get(sv.admin_port, "/metrics")[1].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


def test_a_log_nobody_reads_drops_lines_and_recovers(tmp_path: Path) -> None:
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    # The read end is open (so the worker's open succeeds) and nobody reads: a pipe of one
    # page fills after a few lines, then the 4 KiB buffer, then lines are dropped.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    fcntl.fcntl(reader, fcntl.F_SETPIPE_SZ, 4096)
    sv = Serve(tmp_path, workers=1)
    got: list[bytes] = []
    stop = threading.Event()
    drain: threading.Thread | None = None
    try:
        cfg = tmp_path / "a.yaml"
        access = f'access_log: {{path: "{fifo}", buffer: 4KiB}}\n'
        cfg.write_text(direct_config(sv.port, "A", sv.admin_port) + access)
        sv.start(cfg)
        for _ in range(60):
            assert get(sv.port, "/stuck")[0] == 200  # answered while the log is stuck
        wait_for(lambda: metric(sv, "pavis_access_log_dropped_total") > 0, 10, "drops counted")

        def read_all() -> None:
            os.set_blocking(reader, True)
            while not stop.is_set():
                data = os.read(reader, 65536)
                if not data:
                    return
                got.append(data)

        drain = threading.Thread(target=read_all, daemon=True)
        drain.start()

        def flowing() -> bool:  # a line may still be dropped until the backlog is written
            assert get(sv.port, "/after")[0] == 200
            return b'"path":"/after"' in b"".join(got)

        wait_for(flowing, 10, "lines to flow again")
    finally:
        sv.cleanup()
        stop.set()
        if drain is not None:
            drain.join(5)
        os.close(reader)
    text = b"".join(got).decode()
    recs = [json.loads(x) for x in text.splitlines()]
    assert 0 < sum(r["path"] == "/stuck" for r in recs) < 60  # some written, the rest dropped
    assert recs[-1]["path"] == "/after"
