"""Semantic diff of two runtime models: what would change if B replaced A.

Owns: matching items of two Models by identity (listener, cluster and virtual host by name;
endpoint by cluster and address; route by virtual host and route name) and reporting what was
added, removed or changed, with field-level detail for changed items.
Must not: compile, read files, or compare bytes. Derived tables (route and domain indexes,
smooth-WRR schedules, cumulative weights, positional index references) are left out: they
follow from what is compared, and indices shift whenever anything is inserted. Route order
is compared through each virtual host's ordered list of route names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pavis.artifact.view import address, to_view
from pavis.schema import Model, RateLimit

Kind = Literal["added", "removed", "changed"]
SECTIONS = ("settings", "listener", "cluster", "endpoint", "virtual_host", "route")
_SYMBOL = {"added": "+", "removed": "-", "changed": "~"}


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class FieldChange:
    """One field of a changed item: ``path`` relative to the item; MISSING = absent on that side."""

    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Change:
    kind: Kind
    section: str
    key: str
    old: Any = None  # the item's view on the A side (None when added)
    new: Any = None  # the item's view on the B side (None when removed)
    fields: tuple[FieldChange, ...] = field(default=())


def diff_models(a: Model, b: Model) -> list[Change]:
    """Every difference between ``a`` and ``b``, in section order, keys in A-then-B order."""
    left, right = _items(a), _items(b)
    changes: list[Change] = []
    for section in SECTIONS:
        old_items, new_items = left[section], right[section]
        for key, old in old_items.items():
            if key not in new_items:
                changes.append(Change("removed", section, key, old=old))
            elif old != new_items[key]:
                new = new_items[key]
                fields = tuple(_compare(old, new, ""))
                changes.append(Change("changed", section, key, old=old, new=new, fields=fields))
        for key, new in new_items.items():
            if key not in old_items:
                changes.append(Change("added", section, key, new=new))
    return changes


def _items(model: Model) -> dict[str, dict[str, Any]]:
    """Each section's items keyed by identity, as comparable views without derived data."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    out["settings"] = {
        "format_version": model.format_version,
        "admin": to_view(model.admin),
        "limits": to_view(model.limits),
        "access_log": to_view(model.access_log),
        "tracing": to_view(model.tracing),
    }
    for listener in model.listeners:
        _put(out["listener"], listener.name, to_view(listener))
    for cluster in model.clusters:
        view = to_view(cluster)
        del view["endpoints"], view["schedule"]
        _put(out["cluster"], cluster.name, view)
        for ep in cluster.endpoints:
            _put(out["endpoint"], f"{cluster.name}/{address(ep)}", {"weight": ep.weight})
    for vhost in model.virtual_hosts:
        names = [model.routes[i].name for i in vhost.routes]
        host: dict[str, Any] = {"domains": list(vhost.domains), "routes": names}
        if isinstance(vhost.rate_limit, RateLimit):  # absent when off: shown as added/removed
            host["rate_limit"] = to_view(vhost.rate_limit)
        _put(out["virtual_host"], vhost.name, host)
        for i in vhost.routes:
            route = model.routes[i]
            view = to_view(route)
            del view["vhost"]
            action = view["action"]
            if action["type"] == "forward":
                del action["cumulative_weights"]
                for wc in action["clusters"]:
                    del wc["cluster"]
            _put(out["route"], f"{vhost.name}/{route.name}", view)
    return out


def _put(table: dict[str, Any], key: str, value: Any) -> None:
    # Validation forbids duplicate names; keep a second one visible rather than lose it.
    n, unique = 1, key
    while unique in table:
        n += 1
        unique = f"{key}#{n}"
    table[unique] = value


def _compare(old: Any, new: Any, path: str) -> list[FieldChange]:
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict) and old.get("type") == new.get("type"):
        out: list[FieldChange] = []
        for key in [*old, *(k for k in new if k not in old)]:
            sub = f"{path}.{key}" if path else str(key)
            out.extend(_compare(old.get(key, MISSING), new.get(key, MISSING), sub))
        return out
    if (
        isinstance(old, list)
        and isinstance(new, list)
        and len(old) == len(new)
        and any(isinstance(x, dict) for x in old)
    ):
        out = []
        for i, (x, y) in enumerate(zip(old, new, strict=True)):
            out.extend(_compare(x, y, f"{path}[{i}]"))
        return out
    return [FieldChange(path or "value", old, new)]


def format_text(changes: list[Change]) -> str:
    """Human-readable diff: one line per item, indented field lines under changed items."""
    if not changes:
        return "no differences"
    lines: list[str] = []
    for change in changes:
        lines.append(f"{_SYMBOL[change.kind]} {change.section} {change.key}")
        for fc in change.fields:
            lines.append(f"    {fc.path}: {_show(fc.old)} -> {_show(fc.new)}")
    counts = {k: sum(1 for c in changes if c.kind == k) for k in ("added", "removed", "changed")}
    lines.append(", ".join(f"{n} {k}" for k, n in counts.items()))
    return "\n".join(lines)


def to_json(changes: list[Change]) -> list[dict[str, Any]]:
    """JSON-ready form of the changes (``pavctl diff --json``)."""
    out: list[dict[str, Any]] = []
    for c in changes:
        item: dict[str, Any] = {"kind": c.kind, "section": c.section, "key": c.key}
        if c.kind == "changed":
            item["fields"] = [
                {"path": f.path, **_side("old", f.old), **_side("new", f.new)} for f in c.fields
            ]
        elif c.kind == "added":
            item["new"] = c.new
        else:
            item["old"] = c.old
        out.append(item)
    return out


def _side(name: str, value: Any) -> dict[str, Any]:
    return {} if value is MISSING else {name: value}


def _show(value: Any) -> str:
    if value is MISSING:
        return "(absent)"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
