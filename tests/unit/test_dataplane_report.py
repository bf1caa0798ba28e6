"""The data-plane benchmark's summary and verdict (loadtest/dataplane_report.py), on made-up runs.

Invariants: ratios are medians of each round's pavis / nginx ratio (not ratios of medians);
the verdict holds a scenario to req/s >= 0.85x, p99 <= 1.25x and CPU per request <= 1.4x
(1.6x for a connection per request); a scenario where pavis failed requests or lost workers
never counts as met; a skipped scenario is neither met nor missed; unknown scenario names are
refused by name.
"""

from __future__ import annotations

import math

import pytest

from loadtest.dataplane_report import Run, format_report, overall, summarise
from loadtest.dataplane_scenarios import BY_NAME, SCENARIOS, select


def _run(
    scenario: str, target: str, rnd: int, rps: float, p99: float, cpu: float, **kw: object
) -> Run:
    requests = int(rps * 8)
    return Run(
        round=rnd, scenario=scenario, target=target, order=0, rps=rps, p50_ms=p99 / 3,
        p99_ms=p99, requests=requests, failed=0, cpu_s=cpu * requests / 1e6,
        cpu_us_per_req=cpu, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _rounds(
    scenario: str, rows: list[tuple[float, float, float, float, float, float]]
) -> list[Run]:
    """rows: (pavis rps, p99, cpu, nginx rps, p99, cpu) per round."""
    out = []
    for i, (prps, pp99, pcpu, nrps, np99, ncpu) in enumerate(rows):
        out += [
            _run(scenario, "pavis", i, prps, pp99, pcpu),
            _run(scenario, "nginx", i, nrps, np99, ncpu),
        ]
    return out


def test_ratios_are_medians_of_per_round_ratios() -> None:
    runs = _rounds(
        "ka50",
        [(90, 1.0, 30, 100, 1.0, 25), (40, 2.0, 60, 50, 1.0, 30), (180, 1.0, 30, 200, 1.0, 20)],
    )
    s = summarise(BY_NAME["ka50"], runs)
    assert s["rounds"] == 3
    # per round: 0.9, 0.8, 0.9 → 0.9 (the ratio of the medians would be 90/100 too, but
    # p99: 1, 2, 1 → 1.0 and CPU 1.2, 2.0, 1.5 → 1.5 show the per-round pairing)
    assert s["rps_ratio"] == pytest.approx(0.9)
    assert s["p99_ratio"] == pytest.approx(1.0)
    assert s["cpu_ratio"] == pytest.approx(1.5)
    assert s["pavis"]["rps"] == 90 and s["nginx"]["rps"] == 100


def test_verdict_keepalive_and_close_cpu_goals() -> None:
    rows = [(90, 1.2, 15, 100, 1.0, 10)] * 3  # CPU 1.5x
    ka = summarise(BY_NAME["ka50"], _rounds("ka50", rows))
    close = summarise(BY_NAME["close50"], _rounds("close50", rows))
    assert ka["verdict"]["met"] is False
    assert "CPU/req 1.50x (<= 1.40) MISSED" in ka["verdict"]["line"]
    assert close["verdict"]["met"] is True
    assert close["verdict"]["line"].startswith("close50: met")
    slow = summarise(BY_NAME["ka10"], _rounds("ka10", [(84, 1.0, 10, 100, 1.0, 10)]))
    assert (
        slow["verdict"]["met"] is False
        and "req/s 0.84x (>= 0.85) MISSED" in slow["verdict"]["line"]
    )
    tail = summarise(BY_NAME["ka10"], _rounds("ka10", [(100, 1.3, 10, 100, 1.0, 10)]))
    assert (
        tail["verdict"]["met"] is False and "p99 1.30x (<= 1.25) MISSED" in tail["verdict"]["line"]
    )


def test_failures_and_dead_workers_never_count_as_met() -> None:
    good = [(100, 1.0, 10, 100, 1.0, 10)]
    runs = _rounds("ka50", good)
    runs[0].failed = 3
    s = summarise(BY_NAME["ka50"], runs)
    assert s["verdict"]["met"] is False and "pavis failed 3 requests" in s["verdict"]["line"]
    runs = _rounds("ka50", good)
    runs[0].lost_workers = 2
    s = summarise(BY_NAME["ka50"], runs)
    assert (
        s["verdict"]["met"] is False and "pavis workers died during runs: 2" in s["verdict"]["line"]
    )
    runs = _rounds("ka50", good)
    runs[1].failed = 5  # nginx's failures are reported, not held against pavis
    s = summarise(BY_NAME["ka50"], runs)
    assert s["verdict"]["met"] is True and "nginx failed 5 requests" in s["verdict"]["line"]


def test_a_round_missing_one_proxy_is_not_paired() -> None:
    runs = _rounds("ka50", [(100, 1.0, 10, 100, 1.0, 10)])[:1]
    s = summarise(BY_NAME["ka50"], runs)
    assert s["rounds"] == 0 and math.isnan(s["rps_ratio"])
    assert s["verdict"]["met"] is False


def test_scenario_figures_bodies_idle_and_feature_cost() -> None:
    body = summarise(BY_NAME["body1m"], _rounds("body1m", [(100, 1.0, 500, 200, 1.0, 250)]))
    assert body["pavis"]["mib_per_s"] == pytest.approx(100)
    assert body["pavis"]["cpu_us_per_mib"] == pytest.approx(500, rel=0.01)
    idle = _rounds("idle10k", [(100, 1.0, 10, 100, 1.0, 10)])
    idle[0].pss_before, idle[0].pss_after, idle[0].idle_open = 10 << 20, 20 << 20, 10_000
    idle[1].pss_before, idle[1].pss_after, idle[1].idle_open = 1 << 20, 2 << 20, 9_000
    s = summarise(BY_NAME["idle10k"], idle)
    assert s["pavis"]["bytes_per_idle_conn"] == pytest.approx((10 << 20) / 10_000)
    assert "nginx closed 1000 idle connections" in s["verdict"]["line"]
    assert s["verdict"]["met"] is True  # nginx's closing is reported, not held against pavis
    rl = _rounds("ratelimit", [(100, 1.0, 12, 100, 1.0, 11)])
    rl += [
        _run("ratelimit", "pavis-plain", 0, 100, 1.0, 10),
        _run("ratelimit", "nginx-plain", 0, 100, 1.0, 10.5),
    ]
    s = summarise(BY_NAME["ratelimit"], rl)
    assert s["pavis"]["feature_cpu_us_per_req"] == pytest.approx(2)
    assert s["nginx"]["feature_cpu_us_per_req"] == pytest.approx(0.5)
    text = format_report([s])
    assert "CPU µs/req the feature adds: pavis +2.0" in text


def test_skipped_scenarios_and_the_overall_line() -> None:
    met = summarise(BY_NAME["ka10"], _rounds("ka10", [(100, 1.0, 10, 100, 1.0, 10)]))
    missed = summarise(BY_NAME["ka50"], _rounds("ka50", [(50, 1.0, 10, 100, 1.0, 10)]))
    skipped = summarise(BY_NAME["ratelimit"], [], skipped="pavctl check rejects it")
    assert skipped["verdict"]["met"] is None
    line = overall([met, missed, skipped])
    assert (
        line == "overall: MISSED — 1 of 2 scenarios meet the goal; missed: ka50; skipped: ratelimit"
    )
    assert overall([met]).startswith("overall: met — 1 of 1")
    text = format_report([met, missed, skipped])
    assert "verdict ratelimit: skipped — pavctl check rejects it" in text
    assert text.splitlines()[-1] == line


def test_select_keeps_the_canonical_order_and_names_unknown_ones() -> None:
    assert [s.name for s in select("ka50,ka10")] == ["ka10", "ka50"]
    assert select(None) == SCENARIOS
    with pytest.raises(ValueError, match="unknown scenario.*nope.*known: ka10"):
        select("ka10,nope")
