"""What the locust scenarios send: one request per route of a pavis configuration.

Owns: deriving, from a config (``PAVIS_CONFIG``, default ``examples/demo.yaml``) compiled with
the real compiler, a request for every route — host, method, path, headers and the status a
correct proxy answers — and keeping only those that ``pavis.lookup`` confirms reach that route.
Must not: import locust or gevent (the locustfiles do), or talk to the network.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pavis import lookup, schema
from pavis.compiler import compile_path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "examples" / "demo.yaml"


@dataclass(frozen=True)
class Target:
    name: str  # "vhost/route", the locust stats name
    method: str
    host: str
    path: str
    headers: dict[str, str]
    expect: tuple[int, ...]  # statuses a correct proxy answers; () = any below 500


def _host(domains: tuple[str, ...]) -> str:
    for d in domains:
        if "*" not in d:
            return d
    d = domains[0]
    if d == "*":
        return "anything.test"
    return d.replace("*.", "www.") if d.startswith("*.") else d.replace(".*", ".test")


def _sample_path(m: schema.Match) -> str | None:
    if m.kind == "exact":
        return m.path
    if m.kind == "prefix":
        return m.path + ("bench" if m.path.endswith("/") else "/bench")
    # A regex: fill the common classes with something that matches them; lookup confirms.
    p = m.path.removeprefix("^").removesuffix("$")
    p = re.sub(r"\[0-9\][+*]?|\\d[+*]?", "1", p)
    p = re.sub(r"\[[A-Za-z-]+\][+*]?|\\w[+*]?|\.[+*]", "a", p)
    return p if re.fullmatch(r"[\w/.-]*", p) else None


def _headers(m: schema.Match) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for h in m.headers:
        if h.kind == "exact":
            out[h.name] = h.value
        elif h.kind == "prefix":
            out[h.name] = h.value + "bench"
        elif h.kind == "present":
            out[h.name] = "1"
        elif h.kind == "regex":
            return None  # no generic sample; skip the route
    return out


def _query(m: schema.Match) -> str | None:
    """A query string that satisfies the route's query matchers ("" without any)."""
    parts: list[str] = []
    for q in m.query:
        if q.kind == "exact":
            parts.append(f"{q.name}={q.value}")
        elif q.kind == "prefix":
            parts.append(f"{q.name}={q.value}bench")
        elif q.kind == "present":
            parts.append(f"{q.name}=1")
        elif q.kind == "regex":
            return None  # no generic sample; skip the route
    return "?" + "&".join(parts) if parts else ""


def targets(config: str | Path | None = None) -> list[Target]:
    """One verified request per reachable route of ``config``."""
    path = Path(config or os.environ.get("PAVIS_CONFIG") or DEFAULT_CONFIG)
    model = compile_path(path).model
    out: list[Target] = []
    for idx, route in enumerate(model.routes):
        vhost = model.virtual_hosts[route.vhost]
        url = _sample_path(route.match)
        headers = _headers(route.match)
        query = _query(route.match)
        if url is None or headers is None or query is None:
            continue
        method = route.match.methods[0] if route.match.methods else "GET"
        host = _host(vhost.domains)
        lower = {k.lower(): v for k, v in headers.items()}
        v = lookup.find_vhost(model.domains, host)
        if (
            v != route.vhost
            or lookup.find_route(model.routes, vhost.index, method, url, lower, query) != idx
        ):
            continue  # our sample request would reach another route: leave this one out
        action = route.action
        if isinstance(action, schema.Direct):
            expect: tuple[int, ...] = (action.status,)
        elif isinstance(action, schema.Redirect):
            expect = (action.status,)
        else:
            expect = ()
        out.append(
            Target(f"{vhost.name}/{route.name}", method, host, url + query, headers, expect)
        )
    return out


def status_ok(t: Target, status: int) -> bool:
    return status in t.expect if t.expect else 0 < status < 500
