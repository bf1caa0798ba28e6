"""The benchmark harness's parsers of wrk output, on captured text (no process is run)."""

from __future__ import annotations

import pytest

from loadtest import bench, wrk

WRK_TEXT = """\
Running 1s test @ http://127.0.0.1:18081/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.48ms  575.75us   1.37s    74.59%
  Latency Distribution
     50%  512.00us
     75%    1.20ms
     90%    2.00ms
     99%    1.05s
  1433 requests in 1.10s, 2.30MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 7
Requests/sec:   1302.80
Transfer/sec:      2.09MB
"""


def test_wrk_text_output_is_parsed() -> None:
    r = wrk.parse_text(WRK_TEXT)
    assert r.requests == 1433
    assert r.rps == pytest.approx(1302.80)
    assert r.p50_ms == pytest.approx(0.512)
    assert r.p99_ms == pytest.approx(1050.0)
    assert r.errors == {"connect": 1, "read": 2, "write": 3, "timeout": 4}
    assert r.non2xx == 7
    assert r.failed == 17


def test_script_tables_are_parsed() -> None:
    table = (
        "    routes |     compile_ms | artifact_bytes\n"
        "        10 |           1.50 |          2,345\n"
        "    10,000 |         812.25 |      2,700,000\n"
        "\n"
        "target: read 10k routes < 30 ms: 4.1 ms OK\n"
    )
    rows = bench.parse_rows(table)
    assert rows == [
        {"routes": 10, "compile_ms": 1.5, "artifact_bytes": 2345},
        {"routes": 10000, "compile_ms": 812.25, "artifact_bytes": 2700000},
    ]
    assert bench.parse_rows('# header\n{"routes": 10, "median_ms": 1.0}\n') == [
        {"routes": 10, "median_ms": 1.0}
    ]
