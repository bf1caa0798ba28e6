"""Recovery paths of the control plane: a deleted control socket comes back, a boot from
last-known-good can still be reloaded, a corrupt last-known-good falls back to the newest
intact stored artifact, and checksum prefixes are as long as the docs say."""

from __future__ import annotations

import os
import signal

import pytest

from tests.e2e.helpers_proc import Serve, get, needs_workers, wait_for

pytestmark = needs_workers


def answers(sv: Serve, body: bytes) -> bool:
    try:
        return get(sv.port)[1] == body
    except OSError:
        return False


def test_a_deleted_control_socket_is_recreated(sv: Serve) -> None:
    sv.start(sv.config("A"))
    os.unlink(sv.control)
    wait_for(lambda: os.path.exists(sv.control), 10, "the control socket to come back")
    r = sv.pavctl("reload", str(sv.config("B")))
    assert r.returncode == 0, r.stderr
    assert get(sv.port)[1] == b"B"
    assert "was deleted" in sv.logs()


def test_sighup_after_a_boot_from_last_known_good_reloads_its_config(sv: Serve) -> None:
    cfg = sv.config("A", filename="pavis.yaml")
    sv.start(cfg)
    # "ready" answers before the loop's next turn marks the generation last-known-good.
    wait_for(lambda: (sv.state_dir / "last-known-good").exists(), 10, "last-known-good")
    assert sv.stop() == 0
    sv.start(None)  # no config: last-known-good
    assert get(sv.port)[1] == b"A"
    sv.config("B", filename="pavis.yaml")  # the operator edits the config, then SIGHUP
    assert sv.proc is not None
    sv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: answers(sv, b"B"), 15, "SIGHUP to reload the edited config")
    r = sv.pavctl("reload")  # and a reload without a path reads the same file
    assert r.returncode == 0, r.stderr


def test_a_corrupt_last_known_good_falls_back_to_the_newest_intact_artifact(sv: Serve) -> None:
    sv.start(sv.config("A"))
    a = sv.status()["checksum"]
    r = sv.pavctl("reload", str(sv.config("B")))
    assert r.returncode == 0, r.stderr
    b = sv.status()["checksum"]
    r = sv.pavctl("reload", str(sv.config("C")))
    assert r.returncode == 0, r.stderr
    c = sv.status()["checksum"]
    assert sv.stop() == 0
    assert (sv.state_dir / "last-known-good").read_text().strip() == c
    damaged = sv.state_dir / "artifacts" / f"{c}.pvs"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    sv.start(None)
    st = sv.status()
    assert st["checksum"] == b != a, sv.logs()
    assert get(sv.port)[1] == b"B"
    assert f"booting from {b}" in sv.logs()
    assert f"newest intact artifact {b}" in st["source"]


def test_rollback_needs_a_checksum_prefix_of_ten_hex_digits(sv: Serve) -> None:
    sv.start(sv.config("A"))
    a = sv.status()["checksum"]
    if a[:9].isdigit():
        pytest.skip("this checksum's prefix reads as a generation number")
    assert sv.pavctl("reload", str(sv.config("B"))).returncode == 0
    r = sv.pavctl("rollback", "--to", a[:9])
    assert r.returncode != 0
    assert "at least 10" in r.stderr, r.stderr
    assert get(sv.port)[1] == b"B"
    r = sv.pavctl("rollback", "--to", a[:10])
    assert r.returncode == 0, r.stderr
    assert get(sv.port)[1] == b"A"
