"""Unit tests of the compiler stages: ingest, shape, codec (defaults, binding, tables),
regex checks, the endpoint schedule and validation rules not covered by the corpus."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pavis.artifact import read, seal
from pavis.compiler import compile_path, compile_text, json_schema, units
from pavis.compiler.index import MAX_SCHEDULE, swrr_schedule
from pavis.compiler.regex import literal_prefix, problem
from pavis.errors import ConfigError, IngestError
from pavis.schema import (
    AccessLog,
    AccessLogOff,
    AdminOff,
    Direct,
    Forward,
    HeaderMatch,
    HealthCheck,
    HealthCheckOff,
    Model,
    OutlierOff,
    Redirect,
    Retry,
    RetryOff,
    ServerTls,
    TlsOff,
    UpstreamTls,
)

ROOT = Path(__file__).resolve().parents[2]
CERTS = ROOT / "examples" / "certs"

HEAD = 'version: 1\nlisteners: [{address: "127.0.0.1:8080"}]\n'
CLUSTER = 'clusters: [{name: app, endpoints: ["127.0.0.1:9000"]}]\n'


def model_of(text: str) -> Model:
    return compile_text(text, "yaml").model


def problems_of(text: str, syntax: str = "yaml") -> set[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        compile_text(text, syntax)
    return {(p.path, p.constraint) for p in caught.value.problems}


def routes_yaml(routes: str) -> str:
    body = "".join(f"      {line}\n" for line in routes.strip("\n").splitlines())
    return HEAD + CLUSTER + f"virtual_hosts:\n  - name: v\n    domains: ['*']\n    routes:\n{body}"


# ---------------------------------------------------------------------------- ingest


def test_unknown_extension_is_an_ingest_error(tmp_path: Path) -> None:
    path = tmp_path / "pavis.conf"
    path.write_text("version: 1\n")
    with pytest.raises(IngestError, match="unknown config extension"):
        compile_path(path)


def test_missing_file_is_an_ingest_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="cannot read"):
        compile_path(tmp_path / "absent.yaml")


def test_unknown_syntax_is_an_ingest_error() -> None:
    with pytest.raises(IngestError):
        compile_text("", "ini")


def test_yaml_on_and_no_stay_strings() -> None:
    # YAML 1.1 would turn the key `on` into True and `no`/`off` into booleans.
    m = model_of(
        routes_yaml(
            """
- name: "off"
  match: {prefix: /}
  forward: {cluster: app, retry: {on: [reset], attempts: 2}}
  request_headers: {set: {x-flag: no}}
"""
        )
    )
    route = m.routes[0]
    assert route.name == "off"
    assert route.request_headers.set == (("x-flag", "no"),)
    assert isinstance(route.action, Forward) and isinstance(route.action.retry, Retry)
    assert route.action.retry.on_reset and not route.action.retry.on_connect_error


# ---------------------------------------------------------------------------- shape


def test_every_structural_problem_is_reported_at_once() -> None:
    got = problems_of(
        'version: "1"\nlisteners: [{address: "127.0.0.1:8080", port: 1}]\n'
        "clusters: [{endpoints: [{address: 1}]}]\nextra: 1\n"
    )
    assert got == {
        ("$.version", "type_error"),
        ("$.listeners[0].port", "unknown_field"),
        ("$.clusters[0].name", "missing_field"),
        ("$.clusters[0].endpoints[0].address", "type_error"),
        ("$.extra", "unknown_field"),
    }


def test_json_schema_describes_the_config() -> None:
    schema = json_schema()
    text = json.dumps(schema)
    assert "virtual_hosts" in text and "health_check" in text and "limits" in text
    root = schema["$defs"]["Config"]  # type: ignore[index]
    assert root["required"] == ["version"]
    assert root["additionalProperties"] is False


# ---------------------------------------------------------------------------- codec


def test_every_default_is_materialised() -> None:
    m = model_of(
        routes_yaml(
            """
- match: {prefix: /api/}
  forward: {cluster: app}
- match: {exact: /old}
  redirect: {location: /new}
- match: {exact: /hi}
  direct: {}
"""
        )
    )
    assert m.admin == AdminOff() and m.access_log == AccessLogOff()
    lim = m.limits
    assert (lim.max_request_line, lim.max_header_bytes, lim.max_headers) == (8192, 65536, 100)
    assert lim.max_body_bytes == 64 * 1024 * 1024
    assert (lim.header_timeout_ms, lim.keepalive_timeout_ms, lim.drain_timeout_ms) == (
        10_000,
        60_000,
        30_000,
    )
    listener = m.listeners[0]
    assert (listener.name, listener.host, listener.port) == ("127.0.0.1:8080", "127.0.0.1", 8080)
    assert listener.tls == TlsOff()
    c = m.clusters[0]
    assert c.lb == "round_robin" and c.connect_timeout_ms == 1000 and c.schedule == (0,)
    assert (c.pool.max_connections, c.pool.max_idle, c.pool.idle_timeout_ms) == (128, 32, 60_000)
    assert c.pool.max_pending == 1024  # requests queue for a busy pool, as nginx's do
    assert c.pool.surplus_timeout_ms == 1000  # a burst's idle surplus is kept a second
    assert (lim.max_response_header_bytes, lim.max_response_headers) == (65536, 100)
    assert (c.health_check, c.outlier, c.tls) == (HealthCheckOff(), OutlierOff(), TlsOff())
    fwd, red, direct = (r.action for r in m.routes)
    assert isinstance(fwd, Forward)
    assert [(w.cluster, w.name, w.weight) for w in fwd.clusters] == [(0, "app", 1)]
    assert fwd.cumulative_weights == (1,) and fwd.timeout_ms == 15_000 and fwd.retry == RetryOff(1, 15_000)
    assert fwd.upgrades == ()  # no Upgrade is honoured unless the route lists it
    assert not fwd.rewrite.replace_prefix and not fwd.rewrite.replace_host
    assert red == Redirect(status=302, location="/new")
    assert direct == Direct(status=200, body=b"", content_type="text/plain; charset=utf-8")
    assert [r.name for r in m.routes] == ["route0", "route1", "route2"]
    assert m.domains.default == 0 and m.virtual_hosts[0].routes == (0, 1, 2)


def test_policies_get_their_defaults_and_names_bind_to_indices() -> None:
    m = model_of(
        HEAD
        + """
clusters:
  - name: a
    endpoints: ["127.0.0.1:9000"]
  - name: b
    endpoints: ["127.0.0.1:9001", {address: "[::1]:9002", weight: 3}]
    health_check: {}
    outlier: {}
    tls: {}
virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
      - match: {prefix: /, methods: [post, get, GET], headers: [{name: X-Canary, absent: true}]}
        forward:
          clusters: [{name: b, weight: 3}, {name: a}]
          timeout: 2s
          retry: {attempts: 3, on: [connect_error, "5xx", 429]}
        request_headers: {set: {X-B: "2", X-A: "1"}, add: {Via: pavis}, remove: [Cookie]}
"""
    )
    b = m.clusters[1]
    assert b.endpoints[1].host == "::1" and b.endpoints[1].port == 9002
    assert isinstance(b.health_check, HealthCheck)
    hc = b.health_check
    assert (hc.path, hc.host, hc.interval_ms, hc.timeout_ms) == ("/healthz", "b", 5000, 1000)
    assert (hc.unhealthy_after, hc.healthy_after) == (2, 1)
    assert hc.expected_statuses == tuple(range(200, 300))
    assert b.outlier.consecutive_failures == 5 and b.outlier.eject_ms == 10_000  # type: ignore[union-attr]
    assert b.tls == UpstreamTls(sni="", verify=True, ca_pem="", cert_pem="", key_pem="")
    route = m.routes[0]
    assert route.match.methods == ("GET", "POST")
    assert route.match.headers == (HeaderMatch(name="x-canary", kind="absent", value=""),)
    assert route.request_headers.set == (("x-a", "1"), ("x-b", "2"))
    assert route.request_headers.add == (("via", "pavis"),) and route.request_headers.remove == (
        "cookie",
    )
    fwd = route.action
    assert isinstance(fwd, Forward)
    assert [(w.cluster, w.weight) for w in fwd.clusters] == [(1, 3), (0, 1)]
    assert fwd.cumulative_weights == (3, 4)
    retry = fwd.retry
    assert isinstance(retry, Retry)
    assert retry.statuses == (429, *range(500, 600))
    assert (retry.backoff_base_ms, retry.backoff_max_ms) == (25, 250)
    # The default per-try timeout shares what the backoff leaves of the route budget.
    assert retry.per_try_timeout_ms == (2000 - 25 - 50) // 3


def test_pem_files_are_read_relative_to_the_config_and_embedded(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    for name in ("example.crt", "example.key", "ca.pem"):
        (tmp_path / "tls" / name).write_bytes((CERTS / name).read_bytes())
    cfg = tmp_path / "pavis.yaml"
    cfg.write_text(
        "version: 1\n"
        "listeners: [{address: '127.0.0.1:8443', tls: {cert: tls/example.crt, key: tls/example.key}}]\n"
        "clusters: [{name: c, endpoints: ['127.0.0.1:9000'], tls: {ca: tls/ca.pem, sni: x.test}}]\n"
    )
    m = compile_path(cfg).model
    tls = m.listeners[0].tls
    assert isinstance(tls, ServerTls)
    assert tls.cert_pem == (CERTS / "example.crt").read_text()
    assert tls.key_pem == (CERTS / "example.key").read_text()
    upstream = m.clusters[0].tls
    assert isinstance(upstream, UpstreamTls) and "BEGIN CERTIFICATE" in upstream.ca_pem


def test_access_log_and_limits_take_sizes_and_durations() -> None:
    m = model_of(
        HEAD
        + "access_log: {}\n"
        + "limits: {max_body_bytes: 10MB, max_request_line: 4k, header_timeout: 1m30s}\n"
    )
    assert m.access_log == AccessLog(path="-", buffer_bytes=4 * 1024 * 1024)
    assert m.limits.max_body_bytes == 10_000_000 and m.limits.max_request_line == 4096
    assert m.limits.header_timeout_ms == 90_000


def test_route_index_tables() -> None:
    m = model_of(
        routes_yaml(
            """
- {match: {exact: /a, methods: [POST]}, direct: {}}
- {match: {prefix: /api/, methods: [GET]}, direct: {}}
- {match: {prefix: /api/}, direct: {}}
- {match: {regex: "^/items/[0-9]+$"}, direct: {}}
- {match: {regex: "/x|/y"}, direct: {}}
- {match: {regex: "(?i)/caps"}, direct: {}}
- {match: {exact: /a}, direct: {}}
- {match: {prefix: /}, direct: {}}
"""
        )
    )
    index = m.virtual_hosts[0].index
    # Exact entries are complete: the covering prefix "/" (route 7) is listed with them.
    assert index.exact == {"/a": (0, 6, 7)}
    # Key entries are complete: each lists the routes of every key that is a prefix of it.
    assert index.keys == {
        "": (5,),
        "/": (4, 5, 7),
        "/api/": (1, 2, 4, 5, 7),
        "/items/": (3, 4, 5, 7),
    }
    assert index.key_lengths == (7, 5, 1, 0)


def test_exact_entries_list_covering_prefixes_and_matching_regexes() -> None:
    m = model_of(
        routes_yaml(
            """
- {match: {regex: "^/items/[0-9]+$", methods: [PUT]}, direct: {}}
- {match: {prefix: /items/, methods: [POST]}, direct: {}}
- {match: {exact: /items/42}, direct: {}}
- {match: {regex: "/it.*"}, direct: {}}
- {match: {regex: "/other"}, direct: {}}
"""
        )
    )
    index = m.virtual_hosts[0].index
    assert index.exact == {"/items/42": (0, 1, 2, 3)}


def test_domain_index() -> None:
    m = model_of(
        HEAD
        + """
virtual_hosts:
  - {name: a, domains: [Example.com., "*.example.com"], routes: []}
  - {name: b, domains: ["www.*", "*"], routes: []}
"""
    )
    d = m.domains
    assert d.exact == {"example.com": 0}
    assert d.suffix == {".example.com": 0}
    assert d.prefix == {"www.": 1}
    assert d.default == 1
    assert m.virtual_hosts[0].domains == ("example.com", "*.example.com")


# ---------------------------------------------------------------------------- schedule


def test_swrr_is_nginx_smooth_order() -> None:
    assert swrr_schedule([5, 1, 1]) == (0, 0, 1, 0, 2, 0, 0)
    assert swrr_schedule([1, 2]) == (1, 0, 1)
    assert swrr_schedule([10, 20]) == (1, 0, 1)  # divided by the gcd


@pytest.mark.parametrize("weights", [[1], [3, 1], [2, 2, 2], [7, 3, 5], [1, 999], [100, 1, 50]])
def test_swrr_cycle_holds_each_endpoint_weight_times(weights: list[int]) -> None:
    cycle = swrr_schedule(weights)
    assert len(cycle) <= MAX_SCHEDULE
    counts = Counter(cycle)
    g = sum(weights) // len(cycle)
    assert [counts[i] * g for i in range(len(weights))] == weights


# ---------------------------------------------------------------------------- units, regex


@pytest.mark.parametrize(
    ("text", "ms"),
    [("250ms", 250), ("5s", 5000), ("1m", 60_000), ("1h", 3_600_000), ("1m30s", 90_000)],
)
def test_durations(text: str, ms: int) -> None:
    assert units.duration_ms(text) == ms


@pytest.mark.parametrize("text", ["5", "5 s", "1.5s", "-1s", "s", "5sec", "", "9999h"])
def test_bad_durations(text: str) -> None:
    assert isinstance(units.duration_ms(text), str)


def test_sizes_and_addresses() -> None:
    assert units.size_bytes("64KiB") == 65536 and units.size_bytes("64KB") == 64000
    assert units.size_bytes(12) == 12 and isinstance(units.size_bytes("1 parsec"), str)
    assert units.split_address("[::1]:80") == ("::1", 80)
    assert units.split_address("app.internal:9000") == ("app.internal", 9000)
    for bad in ("nohost", ":80", "1.2.3.4:", "[::1]80", "a b:80", "300.1.1.1:80", "[zz]:1"):
        assert isinstance(units.split_address(bad), str), bad


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        ("^/old/[0-9]+$", "/old/"),
        ("/ab*", "/a"),
        ("/ab?c", "/a"),
        ("/ab{2}", "/a"),
        ("/a|/b", "/"),
        ("/api/v1|/api/v2", "/api/v"),
        ("a|b", ""),
        ("(/x)", ""),
        ("(?i)/x", ""),
        (r"/a\.b", "/a.b"),
        (r"/a\d", "/a"),
        ("[", ""),
    ],
)
def test_literal_prefix(pattern: str, literal: str) -> None:
    assert literal_prefix(pattern) == literal


@pytest.mark.parametrize(
    "pattern",
    [r"^/old/[0-9]+$", r"(/[a-z0-9-]+)+/?", r"^/(\d{1,3}\.)+x$", r"(foo|bar)+", r"/a.*", r"a++"],
)
def test_safe_regexes_pass(pattern: str) -> None:
    assert problem(pattern) is None


@pytest.mark.parametrize(
    ("pattern", "constraint"),
    [
        (r"(a+)+", "unsafe_regex"),
        (r"(a*)*b", "unsafe_regex"),
        (r"(x+x+)+y", "unsafe_regex"),
        (r"(a+/a+)+", "unsafe_regex"),
        (r"(a|a)*", "unsafe_regex"),
        (r"(a|ab|b)*c", "unsafe_regex"),
        (r"(.*a){20}", "unsafe_regex"),
        (r"(a)\1", "unsafe_regex"),
        ("a" * 1025, "unsafe_regex"),
        (r"(?<=a+)b", "invalid_regex"),
        (r"[z-a]", "invalid_regex"),
        (r"(", "invalid_regex"),
    ],
)
def test_bad_regexes_are_rejected(pattern: str, constraint: str) -> None:
    found = problem(pattern)
    assert found is not None and found[0] == constraint


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "routes",
    [
        # narrower methods first: the later route still gets other methods
        "- {match: {prefix: /, methods: [GET]}, direct: {}}\n- {match: {prefix: /a}, direct: {}}",
        # a header matcher first
        "- {match: {prefix: /, headers: [{name: x, present: true}]}, direct: {}}\n"
        "- {match: {prefix: /a}, direct: {}}",
        # a longer prefix first
        "- {match: {prefix: /api/}, direct: {}}\n- {match: {prefix: /api}, direct: {}}",
        # an exact path before the same prefix
        "- {match: {exact: /a}, direct: {}}\n- {match: {prefix: /a}, direct: {}}",
        # a regex whose literal prefix is not under the earlier prefix
        "- {match: {prefix: /old/}, direct: {}}\n- {match: {regex: '/old[0-9]'}, direct: {}}",
    ],
)
def test_orderings_that_are_not_shadowing(routes: str) -> None:
    compile_text(routes_yaml(routes), "yaml")


def test_shadowing_with_header_and_method_subsets() -> None:
    got = problems_of(
        routes_yaml(
            """
- {match: {prefix: /a, methods: [GET, POST], headers: [{name: x, present: true}]}, direct: {}}
- {match: {exact: /ab, methods: [GET], headers: [{name: y, absent: true}, {name: X, present: true}]}, direct: {}}
"""
        )
    )
    assert got == {("$.virtual_hosts[0].routes[1].match", "shadowed_route")}


def test_problems_come_sorted_with_messages() -> None:
    with pytest.raises(ConfigError) as caught:
        compile_text(routes_yaml("- {match: {exact: x}, forward: {cluster: z}}"), "yaml")
    err = caught.value
    assert [p.path for p in err.problems] == sorted(p.path for p in err.problems)
    assert "unknown cluster 'z'" in str(err) and "(unknown_reference)" in str(err)
    assert err.exit_code == 1


def test_a_large_table_compiles() -> None:
    # Guards against accidentally quadratic checks (no timing assertion: it would just hang).
    routes = "".join(
        f"- {{match: {{prefix: /p{i}/}}, direct: {{}}}}\n- {{match: {{exact: /e{i}}}, direct: {{}}}}\n"
        for i in range(2000)
    )
    m = model_of(routes_yaml(routes))
    assert len(m.routes) == 4000 and len(m.virtual_hosts[0].index.exact) == 2000


# ---------------------------------------------------------------------------- robustness

FULL_DOC = json.loads((ROOT / "tests" / "configs" / "valid" / "002_full.json").read_text())
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(["", "0s", "1h", "*", "/", "(a+)+", "[", "x:1", "[::1]:0", "5xx", "-"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["name", "x", "weight"]), st.integers(), max_size=2),
)


def _leaves(doc: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in _leaves(v, (*path, k))] + [path]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in _leaves(v, (*path, i))] + [path]
    return [path]


LEAVES = [p for p in _leaves(FULL_DOC) if p]


@settings(max_examples=300, deadline=None)
@given(edits=st.lists(st.tuples(st.sampled_from(LEAVES), junk), min_size=1, max_size=3))
def test_mangled_configs_are_rejected_cleanly_or_compile(edits: list[tuple[tuple, object]]) -> None:
    doc = copy.deepcopy(FULL_DOC)
    for path, value in edits:
        node = doc
        try:
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit replaced a parent
    origin = str(ROOT / "tests" / "configs" / "valid" / "fuzz.json")
    try:
        validated = compile_text(json.dumps(doc), "json", origin=origin)
    except ConfigError as exc:
        assert exc.problems and all(p.path.startswith("$") and p.constraint for p in exc.problems)
        return
    assert read(seal(validated))[1] == validated.model


def test_an_exact_path_under_an_earlier_regex_is_shadowed() -> None:
    got = problems_of(
        routes_yaml(
            """
- {match: {regex: "^/old/[0-9]+$"}, redirect: {location: /new}}
- {match: {exact: /old/42}, direct: {}}
- {match: {exact: /old/x}, direct: {}}
- {match: {regex: "(a+)+"}, direct: {}}
- {match: {exact: /aaaa}, direct: {}}
"""
        )
    )
    assert got == {
        ("$.virtual_hosts[0].routes[1].match", "shadowed_route"),
        ("$.virtual_hosts[0].routes[3].match.regex", "unsafe_regex"),
    }


def test_rewrite_strip_is_materialised_by_the_compiler() -> None:
    m = model_of(
        routes_yaml(
            """
- {match: {prefix: /api/}, forward: {cluster: app, rewrite: {prefix: /v2/}}}
- {match: {exact: /one}, forward: {cluster: app, rewrite: {prefix: /two}}}
- {match: {prefix: /}, forward: {cluster: app, rewrite: {host: h.internal}}}
"""
        )
    )
    rewrites = [r.action.rewrite for r in m.routes]  # type: ignore[union-attr]
    assert [(rw.replace_prefix, rw.strip) for rw in rewrites] == [
        (True, 5),
        (True, 4),
        (False, 0),
    ]


def _pool_yaml(pool: str) -> str:
    return (
        HEAD
        + f'clusters: [{{name: app, endpoints: ["127.0.0.1:9000"], pool: {pool}}}]\n'
        + "virtual_hosts: [{name: v, domains: ['*'], routes: [{match: {prefix: /}, "
        + "forward: {cluster: app}}]}]\n"
    )


def test_surplus_timeout_takes_zero_and_names_a_bad_duration() -> None:
    assert model_of(_pool_yaml("{surplus_timeout: 0s}")).clusters[0].pool.surplus_timeout_ms == 0
    assert model_of(_pool_yaml("{surplus_timeout: 2m}")).clusters[0].pool.surplus_timeout_ms == (
        120_000
    )
    assert problems_of(_pool_yaml("{surplus_timeout: soon}")) == {
        ("$.clusters[0].pool.surplus_timeout", "invalid_duration")
    }


def test_a_small_pool_keeps_as_many_idle_connections_as_it_has() -> None:
    m = model_of(
        HEAD
        + """
clusters:
  - {name: app, endpoints: ["127.0.0.1:9000"], pool: {max_connections: 4}}
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - match: {prefix: /}
        forward: {cluster: app, upgrades: [WebSocket], retry: {attempts: 2}}
"""
    )
    assert m.clusters[0].pool.max_idle == 4
    fwd = m.routes[0].action
    assert isinstance(fwd, Forward) and fwd.upgrades == ("websocket",)
    assert isinstance(fwd.retry, Retry) and fwd.retry.non_idempotent is False


def test_a_unicode_digit_is_not_a_status() -> None:
    # "¹".isdigit() is true but int("¹") raises: found by the mangled-config property test.
    text = """version: 1
listeners: [{name: public, address: "127.0.0.1:8080"}]
clusters:
  - {name: c, endpoints: ["127.0.0.1:8081"], health_check: {path: /h, expected_statuses: ["¹"]}}
virtual_hosts: [{name: a, domains: ["*"], routes: [{name: r, match: {prefix: /}, forward: {cluster: c}}]}]
"""
    with pytest.raises(ConfigError) as caught:
        compile_text(text, "yaml")
    assert "expected_statuses[0]: '¹' is not a status or 'Nxx' (invalid_status)" in str(caught.value)
