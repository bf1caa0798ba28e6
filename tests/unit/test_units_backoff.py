"""The total backoff of a retry policy is computed, not counted out one wait at a time.

An out-of-range ``retry.attempts`` (say 2**70) is reported as out of range; computing the
backoff the route would spend must not first loop 2**70 times (a hypothesis-made config once
hung the compiler this way).
"""

from __future__ import annotations

import itertools

import pytest

from pavis.compiler import compile_text
from pavis.compiler.units import backoff_total_ms
from pavis.errors import PavisError


def counted(attempts: int, base: int, cap: int) -> int:
    return sum(min(base << i if i < 62 else cap, cap) for i in range(max(attempts - 1, 0)))


def test_the_closed_form_is_the_count() -> None:
    for attempts, base, cap in itertools.product(range(80), (0, 1, 25, 1000), (0, 1, 250, 10**9)):
        assert backoff_total_ms(attempts, base, cap) == counted(attempts, base, cap)


def test_a_huge_attempt_count_is_arithmetic() -> None:
    # 25, 50, ..., capped at 1000 from the seventh wait on.
    assert backoff_total_ms(2**70, 25, 1000) == 25 * (2**6 - 1) + (2**70 - 1 - 6) * 1000


def test_a_huge_attempt_count_is_rejected_not_counted() -> None:
    config = """version: 1
listeners: [{name: public, address: "127.0.0.1:8080"}]
clusters: [{name: c, endpoints: ["127.0.0.1:8081"]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - {name: r, match: {prefix: /}, forward: {cluster: c, retry: {attempts: ATTEMPTS, on: [reset]}}}
""".replace("ATTEMPTS", str(2**70))
    with pytest.raises(PavisError, match="attempts"):
        compile_text(config, "yaml")
