"""Intent → runtime model: every default materialised, every name bound, every table built.

Owns: turning ``intent.Config`` into ``schema.Model`` — durations into milliseconds, sizes
into bytes, ``host:port`` into (host, port), ``cluster: x`` into one weighted entry, absent
policies into explicit ``Off`` variants, names into indices, PEM files into embedded text —
and building the lookup tables (``index``). Problems met while converting (a duration that
does not parse, a name that binds to nothing, a route with two actions, a domain claimed
twice) are collected, never raised, so the validator can report them with its own.
Must not: decide whether the result is acceptable beyond what conversion needs; return a
``Validated`` (only ``validate`` does).

Everything is inserted in a canonical order (sorted dict keys, sorted methods/statuses) so
the same intent always encodes to the same bytes, whatever syntax it was written in.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from pavis.compiler import index, units
from pavis.compiler.intent import (
    ClusterSpec,
    Config,
    DirectSpec,
    ForwardSpec,
    HeaderMatchSpec,
    HeaderOpsSpec,
    ListenerSpec,
    MatchSpec,
    RetrySpec,
    RouteSpec,
)
from pavis.errors import Problem
from pavis.schema import (
    FORMAT_VERSION,
    AccessLog,
    AccessLogOff,
    Admin,
    AdminOff,
    Cluster,
    Direct,
    Endpoint,
    Forward,
    HeaderMatch,
    HeaderOps,
    HealthCheck,
    HealthCheckOff,
    Limits,
    Listener,
    Match,
    Model,
    Outlier,
    OutlierOff,
    Pool,
    Redirect,
    Retry,
    RetryOff,
    Rewrite,
    Route,
    ServerTls,
    TlsOff,
    UpstreamTls,
    VirtualHost,
    WeightedCluster,
)

SUPPORTED_VERSION = 1
RETRY_CONDITIONS = ("connect_error", "reset", "timeout")
_GATEWAY_ERRORS = (502, 503, 504)
_STATUS_CLASS = re.compile(r"[1-5]xx")
_MAX_IDLE = 32  # idle connections kept per endpoint unless the pool is smaller
# An Upgrade protocol: a token, optionally "/version" (RFC 9110 §7.8).
_PROTOCOL = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+(/[!#$%&'*+.^_`|~0-9a-z-]+)?")
_NEVER_UPGRADE = frozenset(("h2c", "h2"))


class _Codec:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[Problem] = []

    def add(self, path: str, constraint: str, message: str) -> None:
        self.problems.append(Problem(path, constraint, message))

    # ------------------------------------------------------------------ value syntaxes

    def duration(self, text: str, path: str, *, allow_zero: bool = False) -> int:
        ms = units.duration_ms(text)
        if isinstance(ms, str):
            self.add(path, "invalid_duration", ms)
            return 1
        if ms == 0 and not allow_zero:
            self.add(path, "invalid_duration", "must be longer than 0")
            return 1
        return ms

    def size(self, value: int | str, path: str) -> int:
        n = units.size_bytes(value)
        if isinstance(n, str):
            self.add(path, "invalid_size", n)
            return 0
        return n

    def address(self, text: str, path: str) -> tuple[str, int]:
        got = units.split_address(text)
        if isinstance(got, str):
            self.add(path, "invalid_address", got)
            return text, 1  # a placeholder port that draws no second (invalid_port) problem
        return got

    def pem(self, file: str, path: str) -> str:
        p = Path(file)
        if not p.is_absolute():
            p = self.base_dir / p
        try:
            return p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            self.add(path, "unreadable_file", f"cannot read {file!r}: {reason}")
            return ""

    def statuses(self, items: list[int | str], path: str, first: int = 0) -> tuple[int, ...]:
        """Status codes or classes ("5xx") → sorted unique codes."""
        out: set[int] = set()
        for k, item in enumerate(items, first):
            if isinstance(item, int) or item.isdigit():
                code = int(item)
                if not 100 <= code <= 599:
                    self.add(f"{path}[{k}]", "invalid_status", f"{item!r} is not an HTTP status")
                out.add(code)
            elif _STATUS_CLASS.fullmatch(item):
                base = int(item[0]) * 100
                out.update(range(base, base + 100))
            else:
                self.add(f"{path}[{k}]", "invalid_status", f"{item!r} is not a status or 'Nxx'")
        return tuple(sorted(out))

    # ------------------------------------------------------------------ sections

    def build(self, cfg: Config) -> Model:
        if cfg.version != SUPPORTED_VERSION:
            self.add(
                "$.version",
                "unsupported_version",
                f"config version {cfg.version}; this pavis reads version {SUPPORTED_VERSION}",
            )
        listeners = tuple(self.listener(i, spec) for i, spec in enumerate(cfg.listeners))
        admin: Admin | AdminOff = AdminOff()
        if cfg.admin is not None:
            host, port = self.address(cfg.admin.address, "$.admin.address")
            admin = Admin(host=host, port=port)
        lim = cfg.limits
        limits = Limits(
            max_request_line=self.size(lim.max_request_line, "$.limits.max_request_line"),
            max_header_bytes=self.size(lim.max_header_bytes, "$.limits.max_header_bytes"),
            max_headers=lim.max_headers,
            max_body_bytes=self.size(lim.max_body_bytes, "$.limits.max_body_bytes"),
            header_timeout_ms=self.duration(lim.header_timeout, "$.limits.header_timeout"),
            keepalive_timeout_ms=self.duration(lim.keepalive_timeout, "$.limits.keepalive_timeout"),
            drain_timeout_ms=self.duration(
                lim.drain_timeout, "$.limits.drain_timeout", allow_zero=True
            ),
            max_response_header_bytes=self.size(
                lim.max_response_header_bytes, "$.limits.max_response_header_bytes"
            ),
            max_response_headers=lim.max_response_headers,
        )
        access_log: AccessLog | AccessLogOff = AccessLogOff()
        if cfg.access_log is not None:
            access_log = AccessLog(path=cfg.access_log.path)

        clusters = tuple(self.cluster(i, spec) for i, spec in enumerate(cfg.clusters))
        by_name: dict[str, int] = {}
        for i, c in enumerate(clusters):
            by_name.setdefault(c.name, i)

        routes: list[Route] = []
        vhosts: list[VirtualHost] = []
        domain_entries: list[tuple[str, int]] = []
        claimed: dict[tuple[str, str], str] = {}
        for v, vspec in enumerate(cfg.virtual_hosts):
            domains: list[str] = []
            for k, raw in enumerate(vspec.domains):
                domain = raw.strip().lower().rstrip(".") if raw != "*" else raw
                domains.append(domain)
                key = index.domain_key(domain)
                where = f"$.virtual_hosts[{v}].domains[{k}]"
                if key in claimed:
                    self.add(where, "duplicate_domain", f"{raw!r} is already {claimed[key]}")
                    continue
                claimed[key] = f"claimed by {where}"
                domain_entries.append((domain, v))
            ids: list[int] = []
            for j, rspec in enumerate(vspec.routes):
                ids.append(len(routes))
                routes.append(self.route(v, j, rspec, by_name, clusters))
            vhosts.append(
                VirtualHost(
                    name=vspec.name,
                    domains=tuple(domains),
                    routes=tuple(ids),
                    index=index.route_index([(i, routes[i].match) for i in ids]),
                )
            )
        return Model(
            format_version=FORMAT_VERSION,
            listeners=listeners,
            admin=admin,
            limits=limits,
            access_log=access_log,
            clusters=clusters,
            virtual_hosts=tuple(vhosts),
            domains=index.domain_index(domain_entries),
            routes=tuple(routes),
        )

    def listener(self, i: int, spec: ListenerSpec) -> Listener:
        path = f"$.listeners[{i}]"
        host, port = self.address(spec.address, f"{path}.address")
        tls: TlsOff | ServerTls = TlsOff()
        if spec.tls is not None:
            tls = ServerTls(
                cert_pem=self.pem(spec.tls.cert, f"{path}.tls.cert"),
                key_pem=self.pem(spec.tls.key, f"{path}.tls.key"),
            )
        return Listener(name=spec.name or spec.address, host=host, port=port, tls=tls)

    def cluster(self, i: int, spec: ClusterSpec) -> Cluster:
        path = f"$.clusters[{i}]"
        endpoints: list[Endpoint] = []
        for k, ep in enumerate(spec.endpoints):
            if isinstance(ep, str):
                host, port = self.address(ep, f"{path}.endpoints[{k}]")
                weight = 1
            else:
                host, port = self.address(ep.address, f"{path}.endpoints[{k}].address")
                weight = ep.weight
            endpoints.append(Endpoint(host=host, port=port, weight=weight))
        weights = [e.weight for e in endpoints]
        cycle = sum(index.reduced_weights(weights))
        if cycle > index.MAX_SCHEDULE:
            self.add(
                f"{path}.endpoints",
                "invalid_weight",
                f"endpoint weights reduce to a cycle of {cycle} picks; "
                f"the limit is {index.MAX_SCHEDULE} (use smaller ratios)",
            )
        pool = spec.pool
        hc: HealthCheck | HealthCheckOff = HealthCheckOff()
        if spec.health_check is not None:
            h = spec.health_check
            hp = f"{path}.health_check"
            hc = HealthCheck(
                path=h.path,
                host=h.host or spec.name,
                interval_ms=self.duration(h.interval, f"{hp}.interval"),
                timeout_ms=self.duration(h.timeout, f"{hp}.timeout"),
                unhealthy_after=h.unhealthy_after,
                healthy_after=h.healthy_after,
                expected_statuses=self.statuses(h.expected_statuses, f"{hp}.expected_statuses"),
            )
        outlier: Outlier | OutlierOff = OutlierOff()
        if spec.outlier is not None:
            outlier = Outlier(
                consecutive_failures=spec.outlier.consecutive_failures,
                eject_ms=self.duration(spec.outlier.eject_for, f"{path}.outlier.eject_for"),
            )
        tls: TlsOff | UpstreamTls = TlsOff()
        if spec.tls is not None:
            t = spec.tls
            tls = UpstreamTls(
                sni=t.sni,
                verify=t.verify,
                ca_pem=self.pem(t.ca, f"{path}.tls.ca") if t.ca else "",
            )
        return Cluster(
            name=spec.name,
            endpoints=tuple(endpoints),
            lb=spec.lb,
            schedule=index.swrr_schedule(weights) if weights else (),
            connect_timeout_ms=self.duration(spec.connect_timeout, f"{path}.connect_timeout"),
            pool=Pool(
                max_connections=pool.max_connections,
                max_idle=(
                    min(_MAX_IDLE, pool.max_connections) if pool.max_idle is None else pool.max_idle
                ),
                idle_timeout_ms=self.duration(pool.idle_timeout, f"{path}.pool.idle_timeout"),
                max_pending=pool.max_pending,
            ),
            health_check=hc,
            outlier=outlier,
            tls=tls,
        )

    # ------------------------------------------------------------------ routes

    def route(
        self,
        v: int,
        j: int,
        spec: RouteSpec,
        by_name: dict[str, int],
        clusters: tuple[Cluster, ...],
    ) -> Route:
        path = f"$.virtual_hosts[{v}].routes[{j}]"
        actions = [
            name
            for name, value in (
                ("forward", spec.forward),
                ("redirect", spec.redirect),
                ("direct", spec.direct),
            )
            if value is not None
        ]
        action: Forward | Redirect | Direct
        if len(actions) != 1:
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
        return Route(
            name=spec.name or f"route{j}",
            vhost=v,
            match=match,
            action=action,
            request_headers=header_ops(spec.request_headers),
            response_headers=header_ops(spec.response_headers),
        )

    def match(self, path: str, spec: MatchSpec) -> Match:
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
        )

    def header_match(self, path: str, spec: HeaderMatchSpec) -> HeaderMatch:
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
                "a header matcher needs exactly one of exact, prefix, regex, present, absent",
            )
        kind, value = kinds[0] if kinds else ("present", "")
        return HeaderMatch(name=spec.name.lower(), kind=kind, value=value)  # type: ignore[arg-type]

    def forward(self, path: str, spec: ForwardSpec, by_name: dict[str, int]) -> Forward:
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
        retry: Retry | RetryOff = RetryOff()
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
            elif isinstance(cond, int) or cond.isdigit() or _STATUS_CLASS.fullmatch(cond):
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


def header_ops(spec: HeaderOpsSpec) -> HeaderOps:
    return HeaderOps(
        remove=tuple(sorted({name.lower() for name in spec.remove})),
        set=tuple(sorted((k.lower(), v) for k, v in spec.set.items())),
        add=tuple(sorted((k.lower(), v) for k, v in spec.add.items())),
    )


def build(config: Config, base_dir: Path) -> tuple[Model, list[Problem]]:
    """The runtime model of ``config`` and the problems met while building it."""
    codec = _Codec(base_dir)
    model = codec.build(config)
    return model, codec.problems
