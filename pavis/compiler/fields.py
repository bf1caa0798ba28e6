"""The syntax of single fields of a runtime model: ports, ranges, names, paths, headers,
domains, regexes and PEM text, each check appending what is wrong to a problem list.

Owns: those checks and the token syntax they share. Must not: know where a field sits in the
model beyond the path it is given (``validate`` walks the model).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pavis.compiler import regex
from pavis.errors import Problem

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CR, LF, NUL and friends
DOMAIN_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def unique(named: Iterable[tuple[str, str]], out: list[Problem]) -> None:
    seen: dict[str, str] = {}
    for path, name in named:
        if name in seen:
            out.append(Problem(path, "duplicate_name", f"{name!r} is already used at {seen[name]}"))
        else:
            seen[name] = path


def tcp_port(path: str, port: int, out: list[Problem]) -> None:
    if not 1 <= port <= 65535:
        out.append(Problem(path, "invalid_port", f"port {port} is not in 1-65535"))


def in_range(path: str, value: int, low: int, high: int, out: list[Problem]) -> None:
    if not low <= value <= high:
        out.append(Problem(path, "out_of_range", f"{value} is not in {low}-{high}"))


def pem(path: str, text: str, kind: str, out: list[Problem]) -> None:
    # An empty text means the file was unreadable, already reported by the codec.
    if text and not re.search(rf"-----BEGIN [A-Z ]*{kind}-----", text):
        out.append(Problem(path, "invalid_pem", f"the file holds no PEM {kind}"))


def domain_problem(domain: str) -> str:
    if domain == "*":
        return ""
    core = domain
    if core.startswith("*."):
        core = core[2:]
    elif core.endswith(".*"):
        core = core[:-2]
    if "*" in core:
        return f"{domain!r}: '*' is allowed only as '*', '*.suffix' or 'prefix.*'"
    if ":" in core and not core.startswith("["):
        return f"{domain!r}: a domain has no port (the Host port is ignored when matching)"
    if core.startswith("[") and core.endswith("]"):
        return ""
    labels = core.split(".")
    if not core or len(core) > 253 or not all(DOMAIN_LABEL.fullmatch(lb) for lb in labels):
        return f"{domain!r} is not a domain name"
    return ""


def url_path(path: str, value: str, out: list[Problem]) -> None:
    if not value.startswith("/"):
        out.append(Problem(path, "invalid_path", f"{value!r} does not start with '/'"))
    elif BAD_VALUE.search(value) or " " in value:
        out.append(Problem(path, "invalid_path", f"{value!r} contains spaces or control bytes"))


def header_name(path: str, name: str, out: list[Problem]) -> None:
    if not TOKEN.fullmatch(name):
        out.append(Problem(path, "invalid_header_name", f"{name!r} is not an HTTP header name"))


def header_value(path: str, value: str, out: list[Problem]) -> None:
    if BAD_VALUE.search(value):
        out.append(
            Problem(path, "invalid_header_value", "header values may not contain CR, LF or NUL")
        )


def regex_pattern(path: str, pattern: str, out: list[Problem]) -> None:
    found = regex.problem(pattern)
    if found:
        out.append(Problem(path, found[0], found[1]))
