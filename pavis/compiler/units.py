"""Value syntaxes of the config: durations, byte sizes, ``host:port`` addresses.

Owns: turning those strings into integers/tuples, or a short reason why not.
Must not: know field paths or the schema; callers attach paths and constraint ids.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

_DURATION = re.compile(r"(?:\d+(?:ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h)")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
MAX_DURATION_MS = 7 * 24 * 3_600_000  # a week: anything longer is a typo

_SIZE = re.compile(r"(\d+)\s*(B|k|K|KB|KiB|M|MB|MiB|G|GB|GiB)?")
_SIZE_UNIT = {
    None: 1,
    "B": 1,
    "k": 1024,
    "K": 1024,
    "KiB": 1024,
    "KB": 1000,
    "M": 1024**2,
    "MiB": 1024**2,
    "MB": 1000**2,
    "G": 1024**3,
    "GiB": 1024**3,
    "GB": 1000**3,
}
MAX_SIZE = 1024**4

_HOSTNAME_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", re.IGNORECASE)


@lru_cache(maxsize=256)  # a big route table repeats a few timeouts thousands of times
def duration_ms(text: str) -> int | str:
    """``"250ms"``, ``"5s"``, ``"1m30s"``, ``"1h"`` → milliseconds; else an error message."""
    if not _DURATION.fullmatch(text):
        return f"{text!r} is not a duration (examples: 250ms, 5s, 1m, 1h, 1m30s)"
    total = sum(int(n) * _DURATION_MS[u] for n, u in _DURATION_PART.findall(text))
    if total > MAX_DURATION_MS:
        return f"{text!r} is longer than a week"
    return total


def size_bytes(value: int | str) -> int | str:
    """``8192``, ``"8KiB"``, ``"64KB"``, ``"1MiB"``, ``"8k"`` → bytes; else an error message."""
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.fullmatch(value.strip())
        if not m:
            return f"{value!r} is not a size (examples: 8192, 8KiB, 64KB, 1MiB)"
        n = int(m.group(1)) * _SIZE_UNIT[m.group(2)]
    if n < 0:
        return f"{value!r} is negative"
    if n > MAX_SIZE:
        return f"{value!r} is larger than 1 TiB"
    return n


def split_address(text: str) -> tuple[str, int] | str:
    """``"host:port"`` or ``"[v6]:port"`` → (host, port); else an error message.

    The port is returned unchecked (range errors are ``invalid_port``, reported apart).
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            return f"{text!r} is not [ipv6]:port"
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not an IPv6 address"
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            return f"{text!r} is not host:port"
        if not valid_host(host):
            return f"{host!r} is not an IPv4 address or a host name"
    if not port_text.isdigit() or not port_text.isascii():
        return f"port {port_text!r} is not a number"
    return host, int(port_text)


def valid_host(host: str) -> bool:
    """An IPv4 address or a DNS host name (IPv6 only in brackets)."""
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        pass
    if host.replace(".", "").isdigit():  # "999.1.1.1" is not a host name either
        return False
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(_HOSTNAME_LABEL.fullmatch(label) for label in labels)


def is_wildcard_host(host: str) -> bool:
    """Binds on every address of its family: it clashes with any host on the same port."""
    return host in ("0.0.0.0", "::", "*")


def backoff_total_ms(attempts: int, base_ms: int, max_ms: int) -> int:
    """Sum of the waits between ``attempts`` tries: base·2^i capped at max, i = 0…attempts-2."""
    waits = max(attempts - 1, 0)
    total = 0
    for i in range(min(waits, 62)):  # past 62 doublings every step is the cap
        step = min(base_ms << i, max_ms)
        total += step
        if step == max_ms:  # every later wait is the cap: an out-of-range count costs nothing
            return total + (waits - i - 1) * max_ms
    return total + max(waits - 62, 0) * max_ms
