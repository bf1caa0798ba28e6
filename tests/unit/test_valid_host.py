"""``lookup.valid_host`` against the RFC 3986 grammar written out as regular expressions:
the fast path (deleting the reg-name characters in one call) must agree on every input."""

from __future__ import annotations

import ipaddress
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from pavis.lookup import valid_host

_REG_NAME = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+;=]|%[0-9A-Fa-f]{2})*")
_HOST_PORT = re.compile(rb"([^:]*)(?::([0-9]{0,5}))?")


def reference(host: bytes) -> bool:
    if host.startswith(b"["):
        m = re.fullmatch(rb"\[([^\]%]*)\](?::([0-9]{0,5}))?", host)
        if m is None:
            return False
        try:
            ipaddress.IPv6Address(m.group(1).decode("ascii"))
        except ValueError:
            return False
        return True
    m = _HOST_PORT.fullmatch(host)
    if m is None:
        return False
    return bool(m.group(1)) and _REG_NAME.fullmatch(m.group(1)) is not None


ALPHABET = list(b"aZ09-._~!$&'()*+;=%fF:[],/ @\x00\x7f\xff") + [ord("g")]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET), max_size=14).map(bytes))
def test_valid_host_agrees_with_the_grammar(host: bytes) -> None:
    assert valid_host(host) == reference(host), host


def test_examples() -> None:
    good = [b"example.com", b"a:80", b"a:", b"10.0.0.1:65535", b"%41b", b"[::1]", b"[::1]:8"]
    bad = [b"", b":80", b"a,b", b"a:123456", b"a:8x", b"%4", b"%zz", b"[::1", b"[fe80::1%1]", b"a b"]
    assert [valid_host(h) for h in good] == [True] * len(good)
    assert [valid_host(h) for h in bad] == [False] * len(bad)
