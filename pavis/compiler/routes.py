"""Routes of the intent → runtime model conversion: match, action and header operations.

Owns: ``RouteCodec`` — one ``RouteSpec`` into one ``schema.Route``: the path, header and query
matchers, exactly one action (forward with its cluster references bound to indices, its
rewrite and retry policy materialised; redirect; or direct) and the header operations in
canonical order.
Must not: build lookup tables or whole sections (``codec`` does).
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from pavis.compiler import units
from pavis.compiler.intent import (
    DirectSpec,
    ForwardSpec,
    HeaderMatchSpec,
    HeaderOpsSpec,
    MatchSpec,
    QueryMatchSpec,
    RetrySpec,
    RouteSpec,
)
from pavis.compiler.ratelimit import compile_limit
from pavis.compiler.values import STATUS_CLASS, Values
from pavis.schema import (
    Cluster,
    Direct,
    Forward,
    HeaderMatch,
    HeaderOps,
    Match,
    QueryMatch,
    Redirect,
    Retry,
    RetryOff,
    Rewrite,
    Route,
    WeightedCluster,
)

RETRY_CONDITIONS = ("connect_error", "reset", "timeout")
_GATEWAY_ERRORS = (502, 503, 504)
# An Upgrade protocol: a token, optionally "/version" (RFC 9110 §7.8).
_PROTOCOL = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+(/[!#$%&'*+.^_`|~0-9a-z-]+)?")
_NEVER_UPGRADE = frozenset(("h2c", "h2"))


_ENCODE = msgspec.msgpack.Encoder().encode


class RouteCodec(Values):
    def __init__(self, base_dir: Path) -> None:
        super().__init__(base_dir)
        # Forward actions built without a problem, by the encoding of their spec: a big route
        # table repeats a few (``forward: {cluster: up}``) thousands of times, and one frozen
        # value serves them all (see ``forward``).
        self._forwards: dict[bytes, Forward] = {}

    def route(
        self,
        v: int,
        j: int,
        spec: RouteSpec,
        by_name: dict[str, int],
        clusters: tuple[Cluster, ...],
        vhost_name: str = "",
    ) -> Route:
        path = f"$.virtual_hosts[{v}].routes[{j}]"
        action: Forward | Redirect | Direct
        if (spec.forward is None) + (spec.redirect is None) + (spec.direct is None) != 2:
            actions = [
                name
                for name, value in (
                    ("forward", spec.forward),
                    ("redirect", spec.redirect),
                    ("direct", spec.direct),
                )
                if value is not None
            ]
            got = ", ".join(actions) if actions else "none"
            self.add(
                path,
                "action_count",
                f"a route needs exactly one of forward, redirect, direct; got {got}",
            )
        if spec.forward is not None:
            action = self.forward(f"{path}.forward", spec.forward, by_name)
        elif spec.redirect is not None:
            action = Redirect(status=spec.redirect.status, location=spec.redirect.location)
        else:
            action = self.direct(spec.direct or DirectSpec(status=404))
        match = self.match(f"{path}.match", spec.match)
        if isinstance(action, Forward) and action.rewrite.replace_prefix:
            # The worker replaces the first `strip` characters of the path (the matched prefix
            # or exact path) by the rewrite prefix; -1 replaces the whole path (regex routes).
            strip = len(match.path) if match.kind in ("exact", "prefix") else -1
            action = msgspec.structs.replace(
                action, rewrite=msgspec.structs.replace(action.rewrite, strip=strip)
            )
        name = spec.name or f"route{j}"
        return Route(
            name=name,
            vhost=v,
            match=match,
            action=action,
            request_headers=header_ops(spec.request_headers),
            response_headers=header_ops(spec.response_headers),
            rate_limit=compile_limit(self, spec.rate_limit, f"{path}.rate_limit", vhost_name, name),
        )

    def match(self, path: str, spec: MatchSpec) -> Match:
        if not (spec.methods or spec.headers or spec.query):  # most routes: a path alone
            if spec.prefix is not None and spec.exact is None and spec.regex is None:
                return Match(kind="prefix", path=spec.prefix, methods=(), headers=(), query=())
            if spec.exact is not None and spec.prefix is None and spec.regex is None:
                return Match(kind="exact", path=spec.exact, methods=(), headers=(), query=())
        kinds = [
            (kind, value)
            for kind, value in (
                ("exact", spec.exact),
                ("prefix", spec.prefix),
                ("regex", spec.regex),
            )
            if value is not None
        ]
        if len(kinds) != 1:
            got = ", ".join(k for k, _ in kinds) if kinds else "none"
            self.add(
                path, "match_count", f"a match needs exactly one of exact, prefix, regex; got {got}"
            )
        kind, value = kinds[0] if kinds else ("prefix", "/")
        return Match(
            kind=kind,  # type: ignore[arg-type]
            path=value,
            methods=tuple(sorted({m.upper() for m in spec.methods})),
            headers=tuple(
                self.header_match(f"{path}.headers[{k}]", h) for k, h in enumerate(spec.headers)
            ),
            query=tuple(
                self.query_match(f"{path}.query[{k}]", q) for k, q in enumerate(spec.query)
            ),
        )

    def header_match(self, path: str, spec: HeaderMatchSpec) -> HeaderMatch:
        kind, value = self.value_match(path, spec, "header")
        return HeaderMatch(name=spec.name.lower(), kind=kind, value=value)  # type: ignore[arg-type]

    def query_match(self, path: str, spec: QueryMatchSpec) -> QueryMatch:
        # Query names are case-sensitive and matched raw: kept as written.
        kind, value = self.value_match(path, spec, "query")
        return QueryMatch(name=spec.name, kind=kind, value=value)  # type: ignore[arg-type]

    def value_match(
        self, path: str, spec: HeaderMatchSpec | QueryMatchSpec, what: str
    ) -> tuple[str, str]:
        """The one kind a header or query matcher states, and its value."""
        kinds: list[tuple[str, str]] = []
        for kind, value in (("exact", spec.exact), ("prefix", spec.prefix), ("regex", spec.regex)):
            if value is not None:
                kinds.append((kind, value))
        # present: false is absent: true and vice versa.
        if spec.present is not None:
            kinds.append(("present" if spec.present else "absent", ""))
        if spec.absent is not None:
            kinds.append(("absent" if spec.absent else "present", ""))
        if len(kinds) != 1:
            self.add(
                path,
                "match_count",
                f"a {what} matcher needs exactly one of exact, prefix, regex, present, absent",
            )
        return kinds[0] if kinds else ("present", "")

    def forward(self, path: str, spec: ForwardSpec, by_name: dict[str, int]) -> Forward:
        """The action of ``spec``: a function of ``spec`` and ``by_name`` alone (``path``
        only names its problems), so a spec met again without a problem the first time gets
        the same value back (keep it so: whatever else a forward reads must be fixed for the
        whole build)."""
        try:
            key = _ENCODE(spec)
        except OverflowError:  # an integer beyond msgpack's (a problem the build reports)
            return self._forward(path, spec, by_name)
        found = self._forwards.get(key)
        if found is not None:
            return found
        before = len(self.problems)
        built = self._forward(path, spec, by_name)
        if len(self.problems) == before:
            self._forwards[key] = built
        return built

    def _forward(self, path: str, spec: ForwardSpec, by_name: dict[str, int]) -> Forward:
        refs: list[tuple[str, str, int]] = []  # (name, path of the name, weight)
        if spec.cluster is not None and spec.clusters is not None:
            self.add(path, "conflicting_fields", "give either cluster or clusters, not both")
        if spec.cluster is not None:
            refs.append((spec.cluster, f"{path}.cluster", 1))
        elif spec.clusters is not None:
            if not spec.clusters:
                self.add(f"{path}.clusters", "empty_list", "at least one cluster is needed")
            for k, wc in enumerate(spec.clusters):
                refs.append((wc.name, f"{path}.clusters[{k}].name", wc.weight))
        else:
            self.add(f"{path}.cluster", "missing_field", "forward needs cluster or clusters")
        targets: list[WeightedCluster] = []
        for name, where, weight in refs:
            found = by_name.get(name)
            if found is None:
                self.add(where, "unknown_reference", f"unknown cluster {name!r}")
                found = -1
            targets.append(WeightedCluster(cluster=found, name=name, weight=weight))
        cumulative: list[int] = []
        running = 0
        for t in targets:
            running += t.weight
            cumulative.append(running)
        rewrite = Rewrite(
            replace_prefix=spec.rewrite is not None and spec.rewrite.prefix is not None,
            prefix=(spec.rewrite.prefix or "") if spec.rewrite else "",
            strip=0,
            replace_host=spec.rewrite is not None and spec.rewrite.host is not None,
            host=(spec.rewrite.host or "") if spec.rewrite else "",
        )
        timeout = self.duration(spec.timeout, f"{path}.timeout")
        retry: Retry | RetryOff = RetryOff(attempts=1, per_try_timeout_ms=timeout)
        if spec.retry is not None:
            retry = self.retry(f"{path}.retry", spec.retry, timeout)
        return Forward(
            clusters=tuple(targets),
            cumulative_weights=tuple(cumulative),
            rewrite=rewrite,
            timeout_ms=timeout,
            retry=retry,
            upgrades=self.upgrades(spec.upgrades, f"{path}.upgrades"),
        )

    def upgrades(self, names: list[str], path: str) -> tuple[str, ...]:
        """The protocols a route lets a client switch to (RFC 9110 §7.8), lower-case."""
        out: set[str] = set()
        for k, name in enumerate(names):
            low = name.lower()
            if not _PROTOCOL.fullmatch(low):
                self.add(f"{path}[{k}]", "invalid_upgrade", f"{name!r} is not a protocol token")
            elif low.split("/", 1)[0] in _NEVER_UPGRADE:
                self.add(
                    f"{path}[{k}]",
                    "unsafe_upgrade",
                    f"{name!r}: cleartext HTTP/2 upgrades are never proxied (a proxy that "
                    "tunnels them lets clients bypass its routing)",
                )
            else:
                out.add(low)
        return tuple(sorted(out))

    def retry(self, path: str, spec: RetrySpec, timeout_ms: int) -> Retry:
        flags = dict.fromkeys(RETRY_CONDITIONS, False)
        statuses: set[int] = set()
        for k, cond in enumerate(spec.on):
            where = f"{path}.on[{k}]"
            if isinstance(cond, str) and cond in flags:
                flags[cond] = True
            elif cond == "gateway_error":
                statuses.update(_GATEWAY_ERRORS)
            elif isinstance(cond, int) or cond.isdigit() or STATUS_CLASS.fullmatch(cond):
                statuses.update(self.statuses([cond], f"{path}.on", first=k))
            else:
                known = ", ".join((*RETRY_CONDITIONS, "gateway_error"))
                self.add(
                    where, "invalid_retry_on", f"{cond!r} is not a status code or one of {known}"
                )
        base = self.duration(spec.backoff.base, f"{path}.backoff.base", allow_zero=True)
        cap = self.duration(spec.backoff.max, f"{path}.backoff.max", allow_zero=True)
        if spec.per_try_timeout is not None:
            per_try = self.duration(spec.per_try_timeout, f"{path}.per_try_timeout")
        else:
            # What is left of the route budget after the backoff waits, shared by the attempts.
            attempts = max(spec.attempts, 1)
            spare = timeout_ms - units.backoff_total_ms(attempts, base, cap)
            per_try = max(spare // attempts, 1)
        return Retry(
            attempts=spec.attempts,
            on_connect_error=flags["connect_error"],
            on_reset=flags["reset"],
            on_timeout=flags["timeout"],
            statuses=tuple(sorted(statuses)),
            per_try_timeout_ms=per_try,
            backoff_base_ms=base,
            backoff_max_ms=cap,
            non_idempotent=spec.non_idempotent,
        )

    def direct(self, spec: DirectSpec) -> Direct:
        return Direct(status=spec.status, body=spec.body.encode(), content_type=spec.content_type)


_NO_HEADER_OPS = HeaderOps(remove=(), set=(), add=())


def header_ops(spec: HeaderOpsSpec) -> HeaderOps:
    if not (spec.remove or spec.set or spec.add):
        return _NO_HEADER_OPS  # most routes: one frozen value shared, nothing to sort
    return HeaderOps(
        remove=tuple(sorted({name.lower() for name in spec.remove})),
        set=tuple(sorted((k.lower(), v) for k, v in spec.set.items())),
        add=tuple(sorted((k.lower(), v) for k, v in spec.add.items())),
    )
