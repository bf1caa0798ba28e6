"""contrib/prometheus and contrib/grafana checked against the real thing: promtool validates
and unit-tests the alert rules, lints a real /metrics scrape, and every metric the rules and
the dashboard query is one that a real `pavis serve` exports.

Skips without promtool (Debian's ``prometheus`` package; .ci/run installs it when it may).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers_proc import Serve, get, needs_workers, wait_for
from tests.upstream import Upstream

PROMTOOL = shutil.which("promtool")
pytestmark = [
    needs_workers,
    pytest.mark.skipif(PROMTOOL is None, reason="needs promtool (Debian package prometheus)"),
]

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
RULES = CONTRIB / "prometheus" / "pavis-alerts.yml"
RULE_TESTS = CONTRIB / "prometheus" / "pavis-alerts.test.yml"
DASHBOARD = CONTRIB / "grafana" / "pavis.json"

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan", "Inf", "NaN"}  # fmt: skip


def promtool(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's $variables allowed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        before = e[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == ".":
            continue  # the exponent of a number
        if e[m.end() :].lstrip().startswith("(") or m.group() in _KEYWORDS:
            continue  # a function or an operator
        names.add(m.group())
    return names


def test_metric_names_finds_selectors_only() -> None:
    expr = ('sum by (cluster) (rate(a_total{x="b{c}"}[5m])) / on (i) group_left () b_seconds'
            ' > 1e3 and histogram_quantile(0.99, c_bucket[$__rate_interval]) unless d offset 5m')  # fmt: skip
    assert metric_names(expr) == {"a_total", "b_seconds", "c_bucket", "d"}


def test_alert_rules_pass_promtool_and_their_unit_tests(tmp_path: Path) -> None:
    r = promtool("check", "rules", RULES.name, cwd=RULES.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 6 rules found" in r.stdout
    r = promtool("test", "rules", RULE_TESTS.name, cwd=RULES.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    # The unit tests discriminate: a rule with another threshold fails them.
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("> 0.05", "> 0.5"))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    r = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert r.returncode != 0 and "PavisHigh5xxRatio" in r.stdout + r.stderr


def _config(sv: Serve, upstream: str) -> str:
    return f"""version: 1
listeners:
  - {{name: public, address: "127.0.0.1:{sv.port}"}}
admin: {{address: "127.0.0.1:{sv.admin_port}"}}
clusters:
  - name: up
    endpoints: ["{upstream}"]
    outlier: {{consecutive_failures: 5}}
    health_check: {{path: /healthz, interval: 1s}}
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - name: up
        match: {{prefix: /}}
        forward: {{cluster: up, timeout: 5s}}
"""


def _served(text: str) -> float:
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "pavis_requests_total"
    )


def _exported(text: str) -> set[str]:
    """Every series name the page declares: TYPE'd families and their histogram series."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _dashboard_exprs(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", var["query"]["query"])
            assert m, var["query"]
            exprs.append(m.group(1))
    return exprs


def test_every_metric_queried_is_exported_and_the_page_passes_promtool(
    tmp_path: Path, upstream: Upstream
) -> None:
    sv = Serve(tmp_path, workers=1)
    cfg = tmp_path / "a.yaml"
    cfg.write_text(_config(sv, upstream.address))
    try:
        sv.start(cfg)
        for _ in range(3):
            assert get(sv.port, "/echo")[0] == 200
        text = wait_for(
            lambda: (t := get(sv.admin_port, "/metrics")[1].decode()) and _served(t) == 3 and t,
            10,
            "a snapshot with the traffic",
        )
    finally:
        sv.cleanup()
    lint = promtool("check", "metrics", cwd=tmp_path, stdin=text)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    exported = _exported(text)

    dash = json.loads(DASHBOARD.read_text())
    queried = {n for e in _dashboard_exprs(dash) for n in metric_names(e)}
    assert {"pavis_requests_total", "pavis_config_last_reload_successful",
            "pavis_worker_process_cpu_seconds_total"} <= queried  # fmt: skip
    assert queried - exported == set(), "the dashboard queries what pavis does not export"

    rules = yaml.safe_load(RULES.read_text())
    in_rules = {n for g in rules["groups"] for r in g["rules"] for n in metric_names(r["expr"])}
    assert {"pavis_worker_generation", "pavis_config_generation"} <= in_rules
    assert in_rules - exported == set(), "the alert rules query what pavis does not export"


def test_dashboard_panels_do_not_overlap() -> None:
    dash = json.loads(DASHBOARD.read_text())
    cells: dict[tuple[int, int], str] = {}
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
        for t in p.get("targets", []):
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
