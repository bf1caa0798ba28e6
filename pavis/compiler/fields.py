"""The syntax of single fields of a runtime model: ports, ranges, names, paths, headers,
domains, regexes and PEM text, each check appending what is wrong to a problem list.

Owns: those checks and the token syntax they share. Must not: know where a field sits in the
model beyond the path it is given (``validate`` walks the model).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from pavis.compiler import regex
from pavis.errors import Problem

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CR, LF, NUL and friends
# What a query name / value can be matched against: the raw query is printable ASCII without
# space or "#"; "&" ends a parameter and the first "=" ends its name. Anything else (a space,
# a decoded non-ASCII character) could never match, since matching is on the undecoded text.
QUERY_NAME = re.compile(r"[!-~]+")
QUERY_VALUE = re.compile(r"[!-~]*")
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


def query_name(path: str, name: str, out: list[Problem]) -> None:
    if not QUERY_NAME.fullmatch(name) or any(c in name for c in "#&="):
        out.append(
            Problem(
                path,
                "invalid_query_name",
                f"{name!r} cannot be a raw query parameter name: it must be non-empty printable "
                "ASCII without space, '#', '&' or '=' (names are matched undecoded: write %20, "
                "not a space)",
            )
        )


def query_value(path: str, value: str, out: list[Problem]) -> None:
    if not QUERY_VALUE.fullmatch(value) or any(c in value for c in "#&"):
        out.append(
            Problem(
                path,
                "invalid_query_value",
                f"{value!r} cannot be a raw query value: it must be printable ASCII without "
                "space, '#' or '&' (values are matched undecoded: write %20, not a space)",
            )
        )


def http_url(path: str, url: str, out: list[Problem]) -> None:
    """An ``http://`` or ``https://`` URL with a host (and a valid port, if any)."""
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or 1 <= parts.port <= 65535
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        out.append(
            Problem(path, "invalid_url", f"{url!r} is not an http:// or https:// URL with a host")
        )
    elif BAD_VALUE.search(url) or " " in url or parts.fragment:
        out.append(Problem(path, "invalid_url", f"{url!r} has spaces, control bytes or a #"))


def regex_pattern(path: str, pattern: str, out: list[Problem]) -> None:
    found = regex.problem(pattern)
    if found:
        out.append(Problem(path, found[0], found[1]))
