"""The compiler's side of ``rate_limit``: defaults materialised, the rate syntax, every
problem at its field path, and the limit's identity (stable across field order and syntax;
changed only by what the limit counts: virtual host, route, rate, burst, key)."""

from __future__ import annotations

import json

import pytest

from pavis.compiler import compile_text
from pavis.compiler.ratelimit import parse_rate, policy_field
from pavis.diff import diff_models
from pavis.errors import ConfigError
from pavis.explain import explain, format_text
from pavis.schema import Model, RateLimit, RateLimitOff

HEAD = """version: 1
listeners: [{address: "127.0.0.1:8080"}]
virtual_hosts:
  - name: main
    domains: ["*"]
"""


def yaml(route_limit: str, vhost_limit: str = "", route: str = "api") -> str:
    vl = f"    rate_limit: {vhost_limit}\n" if vhost_limit else ""
    rl = f"        rate_limit: {route_limit}\n" if route_limit else ""
    return (
        HEAD
        + vl
        + f"""    routes:
      - name: {route}
        match: {{prefix: /}}
        direct: {{status: 200}}
{rl}"""
    )


def model(text: str, syntax: str = "yaml") -> Model:
    return compile_text(text, syntax).model


def limit(text: str) -> RateLimit:
    rl = model(text).routes[0].rate_limit
    assert isinstance(rl, RateLimit)
    return rl


def problems(text: str) -> set[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        compile_text(text, "yaml")
    return {(p.path, p.constraint) for p in caught.value.problems}


def test_defaults_are_materialised() -> None:
    rl = limit(yaml("{rate: 10/s}"))
    assert (rl.rate, rl.interval_ns, rl.burst) == ("10/s", 100_000_000, 10)  # burst = N
    assert (rl.key, rl.header, rl.delay, rl.dry_run) == ("client_ip", "", False, False)
    assert rl.policy == '"route";q=10;w=1'
    assert len(rl.limit_id) == 16


def test_no_limit_is_an_explicit_off() -> None:
    m = model(yaml(""))
    assert isinstance(m.routes[0].rate_limit, RateLimitOff)
    assert isinstance(m.virtual_hosts[0].rate_limit, RateLimitOff)


def test_every_field_is_compiled() -> None:
    rl = limit(yaml("{rate: 30/m, burst: 5, key: {header: X-Api-Key}, delay: true, dry_run: true}"))
    assert (rl.rate, rl.interval_ns, rl.burst) == ("30/m", 2_000_000_000, 5)
    assert (rl.key, rl.header, rl.delay, rl.dry_run) == ("header", "x-api-key", True, True)
    assert rl.policy == '"route";q=5;w=10'
    vh = model(yaml("", "{rate: 2/h, key: route}")).virtual_hosts[0].rate_limit
    assert isinstance(vh, RateLimit)
    assert (vh.key, vh.burst, vh.interval_ns) == ("route", 2, 1_800_000_000_000)
    assert vh.policy == '"virtual_host";q=2;w=3600'


@pytest.mark.parametrize(
    ("text", "want"),
    [("10/s", (10, "s")), (" 1 / m ", (1, "m")), ("3600/h", (3600, "h"))],
)
def test_rates_that_parse(text: str, want: tuple[int, str]) -> None:
    assert parse_rate(text) == want


@pytest.mark.parametrize("text", ["", "10", "10/d", "0/s", "-1/s", "1.5/s", "ten/s", "10/sec"])
def test_rates_that_do_not(text: str) -> None:
    assert isinstance(parse_rate(text), str)


def test_every_problem_names_its_field() -> None:
    got = problems(
        yaml("{rate: 10/x, burst: 0, key: {header: 'bad name'}}", "{rate: 1/s, burst: 2000000}")
    )
    base = "$.virtual_hosts[0]"
    assert (f"{base}.routes[0].rate_limit.rate", "invalid_rate") in got
    assert (f"{base}.routes[0].rate_limit.burst", "out_of_range") in got
    assert (f"{base}.routes[0].rate_limit.key.header", "invalid_header_name") in got
    assert (f"{base}.rate_limit.burst", "out_of_range") in got


def test_structural_problems_name_their_field() -> None:
    got = problems(yaml("{burst: 2, key: ip, nodelay: true}"))
    rl = "$.virtual_hosts[0].routes[0].rate_limit"
    assert got == {
        (f"{rl}.rate", "missing_field"),
        (f"{rl}.key", "type_error"),
        (f"{rl}.nodelay", "unknown_field"),
    }


def test_the_identity_ignores_field_order_syntax_and_how_the_limit_answers() -> None:
    a = limit(yaml("{rate: 10/s, burst: 20, key: route}"))
    b = limit(yaml("{key: route, burst: 20, rate: ' 10 / s', delay: true, dry_run: true}"))
    doc = {
        "version": 1,
        "listeners": [{"address": "127.0.0.1:8080"}],
        "virtual_hosts": [
            {
                "name": "main",
                "domains": ["*"],
                "routes": [
                    {
                        "rate_limit": {"burst": 20, "key": "route", "rate": "10/s"},
                        "direct": {"status": 200},
                        "match": {"prefix": "/"},
                        "name": "api",
                    }
                ],
            }
        ],
    }
    c = model(json.dumps(doc), "json").routes[0].rate_limit
    assert isinstance(c, RateLimit)
    assert a.limit_id == b.limit_id == c.limit_id


@pytest.mark.parametrize(
    "other",
    [
        yaml("{rate: 11/s, burst: 20, key: route}"),
        yaml("{rate: 10/s, burst: 21, key: route}"),
        yaml("{rate: 10/s, burst: 20, key: client_ip}"),
        yaml("{rate: 10/s, burst: 20, key: {header: x-a}}"),
        yaml("{rate: 10/s, burst: 20, key: route}", route="other"),
        yaml("{rate: 10/s, burst: 20, key: route}").replace("name: main", "name: else"),
    ],
)
def test_the_identity_changes_with_what_the_limit_counts(other: str) -> None:
    assert limit(other).limit_id != limit(yaml("{rate: 10/s, burst: 20, key: route}")).limit_id


def test_a_virtual_host_limit_is_not_its_routes_limit() -> None:
    m = model(yaml("{rate: 10/s}", "{rate: 10/s}"))
    vh, rl = m.virtual_hosts[0].rate_limit, m.routes[0].rate_limit
    assert isinstance(vh, RateLimit) and isinstance(rl, RateLimit)
    assert vh.limit_id != rl.limit_id


def test_the_policy_window_is_the_refill_time_rounded_up() -> None:
    assert policy_field("route", 20, 100_000_000) == '"route";q=20;w=2'
    assert policy_field("route", 1, 100_000_000) == '"route";q=1;w=1'  # never 0
    assert policy_field("route", 3, 400_000_000) == '"route";q=3;w=2'  # 1.2 s → 2


def test_explain_lists_the_limits_a_request_passes_in_order() -> None:
    m = model(yaml("{rate: 10/s, key: {header: X-Key}, delay: true}", "{rate: 5/m}"))
    report = explain(m, "GET", "x", "/a")
    got = [(rl["scope"], rl["rate"], rl["burst"], rl["key"]) for rl in report["rate_limits"]]
    assert got == [("virtual_host", "5/m", 5, "client_ip"), ("route", "10/s", 10, "header")]
    vh = m.virtual_hosts[0].rate_limit
    assert isinstance(vh, RateLimit)
    assert report["rate_limits"][0]["limit_id"] == vh.limit_id.hex()
    text = format_text(report)
    assert "rate limit        virtual_host 5/m burst 5 per client_ip; 429" in text
    assert "route 10/s burst 10 per header x-key; delay, then 429" in text


def test_diff_shows_a_changed_virtual_host_limit() -> None:
    a = model(yaml("", "{rate: 5/m}"))
    b = model(yaml("", "{rate: 6/m}"))
    changes = [c for c in diff_models(a, b) if c.kind == "changed"]
    assert [(c.section, c.key) for c in changes] == [("virtual_host", "main")]
    assert "rate_limit.rate" in {f.path for f in changes[0].fields}
    added = diff_models(model(yaml("")), a)
    # The limit itself, and the count in the limits that tells a supervisor to make the segment.
    assert sorted(f.path for c in added for f in c.fields) == ["rate_limit", "rate_limits"]


def test_the_head_counts_the_limits_a_supervisor_makes_the_segment_for() -> None:
    """The supervisor keeps only an artifact's head: the count there says whether the
    generation needs the shared bucket segment."""
    from pavis.artifact import read_head, seal
    from pavis.compiler import compile_text as compile_validated
    from pavis.supervisor.reaction import limited

    counts = []
    for text in (yaml(""), yaml("{rate: 5/m}"), yaml("{rate: 5/m}", "{rate: 9/s}")):
        data = seal(compile_validated(text, "yaml"))
        _, head = read_head(data)
        counts.append((head.limits.rate_limits, limited(head)))
    assert counts == [(0, False), (1, True), (2, True)]
