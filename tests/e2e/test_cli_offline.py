"""The offline ``pavctl`` commands, run as real processes (``python -m pavis.cli``).

Invariants (docs/OPERATIONS.md, exit codes):
- exit 0 ok · 1 rejected or invalid · 2 usage; errors on stderr, one line per problem as
  ``$.path: message (constraint_id)``.
- compile writes a sealed artifact (byte-identical for the same input) and prints its checksum;
  an invalid config writes nothing.
- verify names the reason of a rejection; inspect shows header, checksum and counts.
- diff exits 0 when A and B behave the same and 1 when they differ, like diff(1).
- explain answers from the artifact alone, with the route the lookup picks.
- every command has --help text with an example.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pavis import artifact
from pavis.schema import FORMAT_VERSION

SITE = """\
version: 1
listeners:
  - {name: public, address: "127.0.0.1:8080"}
clusters:
  - name: api
    endpoints: ["127.0.0.1:9001", {address: "127.0.0.1:9002", weight: 2}]
  - name: api-canary
    endpoints: ["127.0.0.1:9003"]
    lb: random
virtual_hosts:
  - name: api
    domains: ["api.example.com", "*.api.example.com"]
    routes:
      - name: health
        match: {exact: /healthz}
        direct: {status: 200, body: "ok\\n", content_type: text/plain}
      - name: v1
        match: {prefix: /v1/, methods: [GET, HEAD], headers: [{name: x-canary, exact: "1"}]}
        forward:
          clusters: [{name: api, weight: 90}, {name: api-canary, weight: 10}]
          rewrite: {prefix: /, host: api.internal}
          timeout: 5s
          retry: {attempts: 3, on: [connect_error, reset, "503"], per_try_timeout: 1s}
        request_headers: {set: {x-env: prod}, remove: [cookie]}
      - name: legacy
        match: {regex: "^/old/[0-9]+$"}
        redirect: {status: 301, location: "https://example.com/new"}
  - name: fallback
    domains: ["*"]
    routes:
      - name: all
        match: {prefix: /}
        forward: {cluster: api}
"""

# Two independent mistakes: both must be reported, each with its path and constraint id.
BAD = """\
version: 1
listeners:
  - {name: public, address: "127.0.0.1:8080"}
clusters:
  - name: api
    endpoints: ["127.0.0.1:9001"]
virtual_hosts:
  - name: api
    domains: ["*"]
    routes:
      - name: a
        match: {exact: /a}
        forward: {cluster: nope}
      - name: b
        match: {exact: /b}
        forward: {clusters: [{name: api, weight: 0}]}
"""

PROBLEM_LINE = re.compile(r"^\$\S*: .+ \([a-z_]+\)$")


def pavctl(
    *args: str, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pavis.cli", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def text(out: bytes) -> str:
    return out.decode("utf-8")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(SITE)
    return path


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return path


# --------------------------------------------------------------------------- help and usage


COMMANDS = ["check", "compile", "verify", "inspect", "diff", "explain", "schema"]


def test_the_group_help_lists_every_offline_command() -> None:
    result = pavctl("--help")
    assert result.returncode == 0
    out = text(result.stdout)
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s", out, re.M), name
    assert "Exit codes" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = pavctl(command, "--help")
    assert result.returncode == 0
    assert "Example" in text(result.stdout)


@pytest.mark.parametrize(
    "args",
    [["no-such-command"], ["check"], ["verify", "/nonexistent/x.pvs"], ["diff", "only-one"]],
    ids=["unknown-command", "missing-argument", "missing-file", "one-of-two"],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = pavctl(*args)
    assert result.returncode == 2
    assert result.stdout == b""
    assert "Usage" in text(result.stderr) or "Error" in text(result.stderr)


def test_the_console_script_is_the_same_application() -> None:
    exe = shutil.which("pavctl")
    if exe is None:
        pytest.skip("pavctl is not on PATH (package not installed with its scripts)")
    result = subprocess.run([exe, "--help"], capture_output=True, timeout=60, check=False)
    assert result.returncode == 0
    assert b"explain" in result.stdout


# --------------------------------------------------------------------------- check


def test_check_accepts_a_valid_config_and_writes_nothing(site: Path) -> None:
    result = pavctl("check", str(site))
    assert result.returncode == 0, result.stderr
    assert re.search(r"ok, .*4 routes; checksum [0-9a-f]{32}", text(result.stdout))
    assert sorted(p.name for p in site.parent.iterdir()) == ["site.yaml"]


def test_check_reports_every_problem_one_line_each(bad: Path) -> None:
    result = pavctl("check", str(bad))
    assert result.returncode == 1
    assert result.stdout == b""
    lines = text(result.stderr).splitlines()
    problems = [line for line in lines if line.startswith("$")]
    assert all(PROBLEM_LINE.match(p) for p in problems), problems
    joined = "\n".join(problems)
    assert "$.virtual_hosts[0].routes[0].forward.cluster: " in joined
    assert "(unknown_reference)" in joined
    assert "$.virtual_hosts[0].routes[1].forward.clusters[0].weight: " in joined
    assert lines[-1].endswith(f"rejected, {len(problems)} problem(s)")


def test_check_rejects_unparsable_syntax(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\nlisteners: [\n")
    result = pavctl("check", str(path))
    assert result.returncode == 1
    assert text(result.stderr).strip()


def test_check_reads_stdin(site: Path) -> None:
    result = pavctl("check", "-", stdin=site.read_bytes())
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- compile / verify


def test_compile_writes_the_artifact_next_to_the_config(site: Path) -> None:
    result = pavctl("compile", str(site))
    assert result.returncode == 0, result.stderr
    out = site.with_suffix(".pvs")
    header, model = artifact.read(out.read_bytes())
    assert text(result.stdout).strip() == f"{header.checksum}  {out}"
    assert len(model.routes) == 4
    assert out.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_compile_is_byte_identical_across_runs_and_paths(site: Path, tmp_path: Path) -> None:
    first = pavctl("compile", str(site), "-o", str(tmp_path / "a.pvs"))
    second = pavctl("compile", "-", "-o", "-", stdin=site.read_bytes())
    assert first.returncode == second.returncode == 0
    assert (tmp_path / "a.pvs").read_bytes() == second.stdout
    checksum = text(first.stdout).split()[0]
    assert text(second.stderr).split()[0] == checksum


def test_compile_writes_nothing_for_an_invalid_config(bad: Path) -> None:
    result = pavctl("compile", str(bad))
    assert result.returncode == 1
    assert not bad.with_suffix(".pvs").exists()
    assert "(unknown_reference)" in text(result.stderr)


def test_compile_from_stdin_needs_an_output(site: Path) -> None:
    result = pavctl("compile", "-", stdin=site.read_bytes())
    assert result.returncode == 2
    assert "-o" in text(result.stderr)


def test_verify_accepts_a_sealed_artifact(site: Path) -> None:
    pvs = site.with_suffix(".pvs")
    assert pavctl("compile", str(site)).returncode == 0
    result = pavctl("verify", str(pvs))
    assert result.returncode == 0
    header = artifact.verify(pvs.read_bytes())
    assert f"checksum {header.checksum}" in text(result.stdout)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[:-3], "truncated"),
        (lambda b: b + b"\n", "length_mismatch"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "checksum_mismatch"),
        (lambda b: b"XXXX" + b[4:], "bad_magic"),
    ],
    ids=["truncated", "trailing", "flipped", "magic"],
)
def test_verify_names_the_reason(site: Path, damage: object, reason: str) -> None:
    assert pavctl("compile", str(site)).returncode == 0
    pvs = site.with_suffix(".pvs")
    pvs.write_bytes(damage(pvs.read_bytes()))  # type: ignore[operator]
    result = pavctl("verify", str(pvs))
    assert result.returncode == 1
    assert result.stdout == b""
    assert text(result.stderr).strip().endswith(f"({reason})")


# --------------------------------------------------------------------------- inspect


def test_inspect_shows_header_checksum_and_counts(site: Path) -> None:
    assert pavctl("compile", str(site)).returncode == 0
    pvs = site.with_suffix(".pvs")
    result = pavctl("inspect", str(pvs))
    assert result.returncode == 0
    out = text(result.stdout)
    header = artifact.verify(pvs.read_bytes())
    assert f"checksum        {header.checksum}" in out
    assert f"format          PAVS version {FORMAT_VERSION}" in out
    for label, n in [
        ("listeners", 1),
        ("clusters", 2),
        ("endpoints", 3),
        ("virtual hosts", 2),
        ("routes", 4),
    ]:
        assert re.search(rf"^{label}\s+{n}$", out, re.M), label


def test_inspect_of_a_config_matches_inspect_of_its_artifact(site: Path) -> None:
    assert pavctl("compile", str(site)).returncode == 0
    of_config = json.loads(pavctl("inspect", "--json", str(site)).stdout)
    of_artifact = json.loads(pavctl("inspect", "--json", str(site.with_suffix(".pvs"))).stdout)
    assert of_config == of_artifact
    assert of_config["counts"]["endpoints"] == 3


def test_inspect_rejects_a_damaged_artifact(site: Path) -> None:
    assert pavctl("compile", str(site)).returncode == 0
    pvs = site.with_suffix(".pvs")
    pvs.write_bytes(pvs.read_bytes()[:-1])
    result = pavctl("inspect", str(pvs))
    assert result.returncode == 1
    assert "(truncated)" in text(result.stderr)


# --------------------------------------------------------------------------- diff


def test_diff_of_a_config_and_its_artifact_is_empty(site: Path) -> None:
    assert pavctl("compile", str(site)).returncode == 0
    result = pavctl("diff", str(site), str(site.with_suffix(".pvs")))
    assert result.returncode == 0
    assert text(result.stdout).strip() == "no differences"


def test_diff_reports_semantic_changes_and_exits_1(site: Path, tmp_path: Path) -> None:
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        SITE.replace("weight: 2}", "weight: 3}")
        .replace("lb: random", "lb: least_request")
        .replace("timeout: 5s", "timeout: 4s")
        .replace('["127.0.0.1:9003"]', '["127.0.0.1:9003", "127.0.0.1:9004"]')
    )
    result = pavctl("diff", str(site), str(changed))
    assert result.returncode == 1, result.stderr
    out = text(result.stdout).splitlines()
    assert out == [
        "~ cluster api-canary",
        '    lb: "random" -> "least_request"',
        "~ endpoint api/127.0.0.1:9002",
        "    weight: 2 -> 3",
        "+ endpoint api-canary/127.0.0.1:9004",
        "~ route api/v1",
        "    action.timeout_ms: 5000 -> 4000",
        "1 added, 0 removed, 3 changed",
    ]
    as_json = json.loads(pavctl("diff", "--json", str(site), str(changed)).stdout)
    assert {
        "kind": "added",
        "section": "endpoint",
        "key": "api-canary/127.0.0.1:9004",
        "new": {"weight": 1},
    } in as_json


def test_diff_with_an_invalid_side_exits_1_with_its_problems(site: Path, bad: Path) -> None:
    result = pavctl("diff", str(site), str(bad))
    assert result.returncode == 1
    assert result.stdout == b""
    assert "(unknown_reference)" in text(result.stderr)


# --------------------------------------------------------------------------- explain


def test_explain_names_route_clusters_rewrite_and_budget(site: Path) -> None:
    assert pavctl("compile", str(site)).returncode == 0
    result = pavctl(
        "explain",
        str(site.with_suffix(".pvs")),
        "--host",
        "eu.api.example.com:8080",
        "--path",
        "/v1/users?page=2",
        "-H",
        "X-Canary: 1",
    )
    assert result.returncode == 0, result.stderr
    out = text(result.stdout)
    assert "virtual host      api " in out
    assert "route             #1 v1 " in out
    assert "api weight 90 (90.0%) round_robin: 127.0.0.1:9001 w1, 127.0.0.1:9002 w2" in out
    assert "api-canary weight 10 (10.0%) random: 127.0.0.1:9003 w1" in out
    assert "upstream request  api.internal /users?page=2" in out
    assert "timeout           5000 ms" in out
    assert "retry             3 attempts on connect_error, reset, 503; per try 1000 ms" in out
    assert "request headers   remove cookie; set x-env: prod" in out


def test_explain_json_of_a_redirect(site: Path) -> None:
    result = pavctl(
        "explain", str(site), "--host", "api.example.com", "--path", "/old/42", "--json"
    )
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["route"]["name"] == "legacy"
    assert report["outcome"] == "redirect"
    assert report["action"] == {
        "type": "redirect",
        "status": 301,
        "location": "https://example.com/new",
    }


def test_explain_exits_1_when_the_request_would_get_a_404(site: Path) -> None:
    # /v1/ without the x-canary header: v1 does not hold; nothing after it in vhost api does.
    result = pavctl("explain", str(site), "--host", "api.example.com", "--path", "/v1/users")
    assert result.returncode == 1
    assert "none matches -> 404" in text(result.stdout)
    assert "#1 v1 no" in text(result.stdout)


def test_explain_reads_a_config_or_an_artifact_from_stdin(site: Path) -> None:
    args = ("explain", "-", "--host", "api.example.com", "--path", "/healthz", "--json")
    from_config = pavctl(*args, stdin=site.read_bytes())
    sealed = pavctl("compile", str(site), "-o", "-").stdout
    from_artifact = pavctl(*args, stdin=sealed)
    assert from_config.returncode == from_artifact.returncode == 0
    assert json.loads(from_config.stdout) == json.loads(from_artifact.stdout)
    assert json.loads(from_config.stdout)["outcome"] == "direct"


def test_explain_rejects_a_malformed_header(site: Path) -> None:
    result = pavctl("explain", str(site), "--host", "a", "-H", "no-colon")
    assert result.returncode == 2
    assert "name: value" in text(result.stderr)


# --------------------------------------------------------------------------- schema


def test_schema_prints_a_json_schema() -> None:
    result = pavctl("schema")
    assert result.returncode == 0
    doc = json.loads(result.stdout)
    assert "$defs" in doc or "properties" in doc
    assert "virtual_hosts" in json.dumps(doc)


# --------------------------------------------------------------------------- determinism

DETERMINISM_CASES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("config", DETERMINISM_CASES, ids=[p.name for p in DETERMINISM_CASES])
def test_compile_does_not_depend_on_hash_seed_or_directory(config: Path, tmp_path: Path) -> None:
    # Set and dict iteration order follows PYTHONHASHSEED: another machine, another seed.
    outputs = []
    for seed, cwd in (("0", tmp_path), ("4242", config.parent)):
        out = tmp_path / f"seed{seed}.pvs"
        result = subprocess.run(
            [sys.executable, "-m", "pavis.cli", "compile", str(config), "-o", str(out)],
            capture_output=True,
            cwd=cwd,
            env={**os.environ, "PYTHONHASHSEED": seed},
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
