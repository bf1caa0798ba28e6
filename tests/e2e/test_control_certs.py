"""Certificate rotation by reload: a listener's TLS material is generation data, so a reload
that changes only the certificate is accepted and new handshakes present the new one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers_proc import Serve, needs_workers
from tests.e2e.helpers_tls import peer_cn, self_signed, tls_config

pytestmark = needs_workers


@pytest.fixture
def sv(tmp_path: Path) -> Iterator[Serve]:
    s = Serve(tmp_path, workers=2)
    yield s
    s.cleanup()


def test_a_reload_rotates_the_certificate_of_a_tls_listener(sv: Serve) -> None:
    old = self_signed(sv.tmp, "old.test")
    new = self_signed(sv.tmp, "new.test")
    sv.start(tls_config(sv, *old, "A"), ready=False)
    sv.wait_ready()
    assert peer_cn(sv.port) == "old.test"
    r = sv.pavctl("reload", str(tls_config(sv, *new, "B")))
    assert r.returncode == 0, r.stderr
    assert "listeners_changed" not in r.stderr
    for _ in range(6):  # every worker: each new handshake, whichever worker accepts it
        assert peer_cn(sv.port) == "new.test"
    r = sv.pavctl("rollback")
    assert r.returncode == 0, r.stderr
    assert peer_cn(sv.port) == "old.test"
