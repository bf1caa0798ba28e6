"""Bodies are streamed, not buffered: 256 MB each way with a bounded worker RSS."""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Iterator

import pytest

from tests.e2e.helpers_worker import Workers, seal_yaml
from tests.helpers import one_cluster, unique_instance
from tests.upstream import Upstream, launch

SIZE = 256 * 1024 * 1024
PIECE = b"\xa5" * (1024 * 1024)
RSS_BOUND_KB = 120 * 1024  # the body is 256 MB; a worker that buffered it could not stay under


def _rss_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[Workers, Upstream]]:
    up = launch("big")
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(one_cluster(w.port, up.address, limits="max_body_bytes: 1GiB")))
        yield w, up
    up.stop()


def test_256mb_upload_streams_with_bounded_rss(setup: tuple[Workers, Upstream]) -> None:
    w, _ = setup
    pid = w.pids[0]

    def body() -> Iterator[bytes]:
        for _ in range(SIZE // len(PIECE)):
            yield PIECE

    expected = hashlib.sha256()
    for _ in range(SIZE // len(PIECE)):
        expected.update(PIECE)
    conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=60)
    try:
        conn.request("POST", "/upload", body=body(), headers={"Content-Length": str(SIZE)})
        resp = conn.getresponse()
        result = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200
    assert result["length"] == SIZE
    assert result["sha256"] == expected.hexdigest()
    print("worker VmHWM kB", _rss_kb(pid, "VmHWM"))
    assert _rss_kb(pid, "VmHWM") < RSS_BOUND_KB


def test_256mb_download_streams_with_bounded_rss(setup: tuple[Workers, Upstream]) -> None:
    w, _ = setup
    pid = w.pids[0]
    conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=60)
    total = 0
    try:
        conn.request("GET", f"/stream/{SIZE}")
        resp = conn.getresponse()
        assert resp.status == 200
        while data := resp.read(1 << 20):
            total += len(data)
    finally:
        conn.close()
    assert total == SIZE
    print("worker VmHWM kB", _rss_kb(pid, "VmHWM"))
    assert _rss_kb(pid, "VmHWM") < RSS_BOUND_KB
