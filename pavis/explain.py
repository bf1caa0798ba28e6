"""``pavctl explain``: what the proxy would do with one request, answered from the model alone.

Owns: turning a request (method, Host, target with its query, headers) into a report — virtual host, route,
action, candidate clusters with weights and endpoints, rewrites, header operations, timeout
and retry budget.
Must not: match anything itself. Host and route selection go through ``pavis.lookup`` only
(the same functions the workers call on every request), so what explain says is what the
proxy does. Nothing here is evaluated per request by the runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pavis import lookup
from pavis.artifact.view import address, to_view
from pavis.schema import Forward, HeaderOps, Model, RateLimit, Redirect, Route


def header_map(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Request headers as the workers hand them to lookup: lower-case names, repeats joined."""
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.strip().lower()
        value = value.strip()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def upstream_target(route: Route, path: str, query: str) -> str:
    """The request target sent upstream, as the worker builds it (``workers.rewrite``) from
    the target as ``lookup.split_target`` read it: with a prefix rewrite, the first
    ``rewrite.strip`` characters of the path (-1: all of it) are replaced by
    ``rewrite.prefix`` and the query kept; without one, the target is unchanged. The
    compiler computed ``strip``; neither explain nor the worker decides it."""
    action = route.action
    if not isinstance(action, Forward) or not action.rewrite.replace_prefix:
        return path + query
    rw = action.rewrite
    return rw.prefix + (path[rw.strip :] if rw.strip >= 0 else "") + query


def apply_ops(ops: HeaderOps, headers: dict[str, str]) -> dict[str, str]:
    """Header operations in their documented order: remove, set, add (append)."""
    out = {k: v for k, v in headers.items() if k not in ops.remove}
    for name, value in ops.set:
        out[name] = value
    for name, value in ops.add:
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def explain(
    model: Model, method: str, host: str, target: str, headers: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    """The whole decision for one request, JSON-ready."""
    method = method.upper()
    # The one reading of a request target, the workers' (``workers.request.settle_head``).
    parts = lookup.split_target_text(method, target)
    if parts is not None and parts[2] is not None:
        host = parts[2]  # absolute-form: the target's authority is the Host
    path, query = (parts[0], parts[1]) if parts is not None else (target, "")
    hmap = header_map(headers)
    report: dict[str, Any] = {
        "request": {
            "method": method,
            "host": host,
            "normalised_host": lookup.normalise_host(host),
            "path": path,
            "query": query,
            "headers": hmap,
        },
        "virtual_host": None,
        "candidates": [],
        "route": None,
    }
    # The request head rules the workers apply before routing (``workers.request``).
    bad = _bad_request(method, host, parts is None)
    if bad:
        report.update(outcome=bad[0], status=bad[1])
        return report
    v = lookup.find_vhost(model.domains, host)
    if v < 0:
        report.update(outcome="no_virtual_host", status=404)
        return report
    vhost = model.virtual_hosts[v]
    report["virtual_host"] = {"index": v, "name": vhost.name, "domains": list(vhost.domains)}
    # The routes the index offers for this path, and whether each holds: the "why" of the answer.
    report["candidates"] = [
        {
            "index": i,
            "name": model.routes[i].name,
            "holds": lookup.route_holds(model.routes[i], method, path, hmap, query),
        }
        for i in lookup.candidates(vhost.index, path)
    ]
    r = lookup.find_route(model.routes, vhost.index, method, path, hmap, query)
    if r < 0:
        report.update(outcome="no_route", status=404)
        return report
    route = model.routes[r]
    report["route"] = {
        "index": r,
        "position": vhost.routes.index(r),
        "name": route.name,
        "match": to_view(route.match),
    }
    action = route.action
    report["outcome"] = action.__struct_config__.tag
    report["status"] = None if isinstance(action, Forward) else action.status
    report["action"] = to_view(action)
    if not isinstance(action, Forward | Redirect):
        report["body_bytes"] = len(action.body)
    report["request_headers"] = to_view(route.request_headers)
    report["response_headers"] = to_view(route.response_headers)
    # The limits the request passes before its action, in the workers' order.
    report["rate_limits"] = [
        _limit_view(scope, rl)
        for scope, rl in (("virtual_host", vhost.rate_limit), ("route", route.rate_limit))
        if isinstance(rl, RateLimit)
    ]
    if isinstance(action, Forward):
        report["upstream"] = _upstream(model, route, action, host, path, query, hmap)
    return report


def _limit_view(scope: str, rl: RateLimit) -> dict[str, Any]:
    view: dict[str, Any] = {"scope": scope, **to_view(rl)}
    view["limit_id"] = rl.limit_id.hex()
    return view


def _bad_request(method: str, host: str, bad_target: bool) -> tuple[str, int] | None:
    """The answer the workers give before routing, if any: (outcome, status)."""
    if method == "CONNECT":
        return "method_not_implemented", 501
    if bad_target:
        return "invalid_target", 400
    if not lookup.valid_host(host.encode("utf-8")):
        return "invalid_host", 400
    return None


def _upstream(
    model: Model,
    route: Route,
    action: Forward,
    host: str,
    path: str,
    query: str,
    hmap: dict[str, str],
) -> dict[str, Any]:
    total = action.cumulative_weights[-1] if action.cumulative_weights else 0
    clusters = []
    for wc in action.clusters:
        cluster = model.clusters[wc.cluster]
        clusters.append(
            {
                "name": cluster.name,
                "weight": wc.weight,
                "share_percent": round(100.0 * wc.weight / total, 2) if total else 0.0,
                "lb": cluster.lb,
                "connect_timeout_ms": cluster.connect_timeout_ms,
                "endpoints": [
                    {"address": address(e), "weight": e.weight} for e in cluster.endpoints
                ],
                "health_check": cluster.health_check.__struct_config__.tag,
                "outlier": cluster.outlier.__struct_config__.tag,
                "tls": cluster.tls.__struct_config__.tag,
            }
        )
    rewrite = action.rewrite
    return {
        "target": upstream_target(route, path, query),
        "host": rewrite.host if rewrite.replace_host else host,
        "headers": apply_ops(route.request_headers, hmap),
        "clusters": clusters,
        "timeout_ms": action.timeout_ms,
        "retry": to_view(action.retry),
    }


def format_text(report: dict[str, Any]) -> str:
    """The report for a terminal: one labelled line per decision."""
    req = report["request"]
    lines = [f"request           {req['method']} {req['host']} {req['path']}{req['query']}"]
    for name, value in req["headers"].items():
        lines.append(f"                  {name}: {value}")
    vh = report["virtual_host"]
    if vh is None and report["outcome"] != "no_virtual_host":
        lines.append(f"answer            {report['status']} ({report['outcome']})")
        return "\n".join(lines)
    if vh is None:
        lines.append(f"virtual host      none matches {req['normalised_host']!r} -> 404")
        return "\n".join(lines)
    lines.append(f"virtual host      {vh['name']} (domains: {', '.join(vh['domains'])})")
    tried = ", ".join(
        f"#{c['index']} {c['name']} {'yes' if c['holds'] else 'no'}" for c in report["candidates"]
    )
    lines.append(f"candidates        {tried or 'none'}")
    route = report["route"]
    if route is None:
        lines.append("route             none matches -> 404")
        return "\n".join(lines)
    lines.append(
        f"route             #{route['index']} {route['name']} ({_match_text(route['match'])})"
    )
    action = report["action"]
    outcome = report["outcome"]
    if outcome == "redirect":
        lines.append(f"action            redirect {action['status']} -> {action['location']}")
    elif outcome == "direct":
        lines.append(
            f"action            direct {action['status']} {action['content_type']} "
            f"({report['body_bytes']} bytes)"
        )
    else:
        up = report["upstream"]
        lines.append("action            forward")
        for i, c in enumerate(up["clusters"]):
            eps = ", ".join(f"{e['address']} w{e['weight']}" for e in c["endpoints"])
            label = "clusters" if i == 0 else ""
            lines.append(
                f"{label:<18}{c['name']} weight {c['weight']} ({c['share_percent']}%) "
                f"{c['lb']}: {eps}"
            )
        lines.append(f"upstream request  {up['host']} {up['target']}")
        lines.append(f"timeout           {up['timeout_ms']} ms")
        lines.append(f"retry             {_retry_text(up['retry'])}")
    lines.append(f"request headers   {_ops_text(report['request_headers'])}")
    lines.append(f"response headers  {_ops_text(report['response_headers'])}")
    for i, rl in enumerate(report["rate_limits"]):
        lines.append(f"{'rate limit' if i == 0 else '':<18}{_limit_text(rl)}")
    return "\n".join(lines)


def _limit_text(rl: dict[str, Any]) -> str:
    key = f"header {rl['header']}" if rl["key"] == "header" else rl["key"]
    mode = (
        "dry run (never rejects)" if rl["dry_run"] else "delay, then 429" if rl["delay"] else "429"
    )
    return f"{rl['scope']} {rl['rate']} burst {rl['burst']} per {key}; {mode}"


def _match_text(match: dict[str, Any]) -> str:
    parts = [f"{match['kind']} {match['path']}"]
    if match["methods"]:
        parts.append("methods " + " ".join(match["methods"]))
    for h in match["headers"]:
        value = f" {h['value']!r}" if h["kind"] in ("exact", "prefix", "regex") else ""
        parts.append(f"header {h['name']} {h['kind']}{value}")
    for q in match["query"]:
        value = f" {q['value']!r}" if q["kind"] in ("exact", "prefix", "regex") else ""
        parts.append(f"query {q['name']} {q['kind']}{value}")
    return ", ".join(parts)


def _retry_text(retry: dict[str, Any]) -> str:
    if retry["type"] == "off":
        return "off (one attempt)"
    on = [n for n in ("connect_error", "reset", "timeout") if retry[f"on_{n}"]]
    on += [str(s) for s in retry["statuses"]]
    return (
        f"{retry['attempts']} attempts on {', '.join(on) or 'nothing'}; "
        f"per try {retry['per_try_timeout_ms']} ms; "
        f"backoff {retry['backoff_base_ms']}-{retry['backoff_max_ms']} ms"
    )


def _ops_text(ops: dict[str, Any]) -> str:
    parts = []
    if ops["remove"]:
        parts.append("remove " + ", ".join(ops["remove"]))
    if ops["set"]:
        parts.append("set " + ", ".join(f"{k}: {v}" for k, v in ops["set"]))
    if ops["add"]:
        parts.append("add " + ", ".join(f"{k}: {v}" for k, v in ops["add"]))
    return "; ".join(parts) or "none"
