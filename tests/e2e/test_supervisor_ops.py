"""Live operations against a real `pavis serve`: reload, rejections, rollback, status, history,
the admin listener and SIGHUP. Invariant: a rejected reload changes neither traffic nor status.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from pavis.artifact import seal
from pavis.compiler import compile_path
from pavis.errors import EXIT_REJECTED, EXIT_UNREACHABLE, EXIT_USAGE
from tests.e2e.helpers_proc import Serve, get, needs_workers, serving, wait_for

pytestmark = needs_workers


def _checksums(st: dict) -> set[str]:  # type: ignore[type-arg]
    return {w["checksum"] for w in st["workers"]}


def test_reload_flips_every_worker_and_is_recorded(tmp_path: Path) -> None:
    with serving(tmp_path, "A") as sv:
        before = sv.status()
        assert get(sv.port) == (200, b"A")
        r = sv.pavctl("reload", str(sv.config("B")), "--json")
        assert r.returncode == 0, r.stderr
        answer = json.loads(r.stdout)
        assert answer["outcome"] == "accepted"
        assert answer["generation"] > before["generation"]
        assert 0 <= answer["load_ms"] <= answer["elapsed_ms"]
        assert get(sv.port) == (200, b"B")
        st = sv.status()
        assert st["checksum"] == answer["checksum"]
        assert _checksums(st) == {answer["checksum"]}
        assert sv.pavctl("status", "--expect", answer["checksum"]).returncode == 0
        drift = sv.pavctl("status", "--expect", before["checksum"])
        assert drift.returncode == EXIT_REJECTED and "drift" in drift.stderr
        # The same config again is a no-op success.
        again = sv.pavctl("reload", str(sv.config("B")), "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["outcome"] == "unchanged"
        hist = sv.history()
        assert [(e["op"], e["outcome"]) for e in hist] == [
            ("boot", "accepted"),
            ("reload", "accepted"),
            ("reload", "unchanged"),
        ]
        assert hist[1]["checksum"] == answer["checksum"]
        assert hist[1]["source"] == str(tmp_path / "B.yaml")
        lkg = (sv.state_dir / "last-known-good").read_text().strip()
        assert lkg == answer["checksum"]
        assert (sv.state_dir / "artifacts" / f"{lkg}.pvs").exists()
        human = sv.pavctl("status")
        assert human.returncode == 0 and answer["checksum"] in human.stdout


@pytest.mark.parametrize("kind", ["invalid_config", "corrupt_artifact", "listener_change"])
def test_rejected_reload_changes_nothing(tmp_path: Path, kind: str) -> None:
    with serving(tmp_path, "A") as sv:
        before = sv.status()
        if kind == "invalid_config":
            bad = tmp_path / "bad.yaml"
            bad.write_text(sv.config("B").read_text().replace("status: 200", "status: 99999"))
        elif kind == "corrupt_artifact":
            bad = tmp_path / "bad.pvs"
            data = bytearray(seal(compile_path(sv.config("B"))))
            data[-1] ^= 0xFF
            bad.write_bytes(bytes(data))
        else:
            bad = tmp_path / "moved.yaml"
            bad.write_text(sv.config("B").read_text().replace(str(sv.port), str(sv.port + 1)))
        r = sv.pavctl("reload", str(bad))
        assert r.returncode == EXIT_REJECTED, (r.stdout, r.stderr)
        reason = {"invalid_config": "status", "corrupt_artifact": "checksum_mismatch",
                  "listener_change": "listeners cannot change"}[kind]  # fmt: skip
        assert reason in r.stderr
        assert get(sv.port) == (200, b"A")
        after = sv.status()
        assert (after["generation"], after["checksum"]) == (
            before["generation"],
            before["checksum"],
        )
        assert _checksums(after) == {before["checksum"]}
        assert [w["pid"] for w in after["workers"]] == [w["pid"] for w in before["workers"]]
        last = sv.history()[-1]
        assert last["outcome"] == "rejected" and last["reason"]


def test_rollback_without_recompiling_and_to_a_named_generation(tmp_path: Path) -> None:
    with serving(tmp_path, "A") as sv:
        gen_a = sv.status()
        assert sv.pavctl("reload", str(sv.config("B"))).returncode == 0
        assert sv.pavctl("reload", str(sv.config("C"))).returncode == 0
        gen_b = next(e for e in sv.history() if e["source"].endswith("B.yaml"))
        # Break every config on disk: a rollback must not need them.
        for name in ("A", "B", "C"):
            (tmp_path / f"{name}.yaml").write_text("not: [valid")
        r = sv.pavctl("rollback", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["checksum"] == gen_b["checksum"]
        assert get(sv.port) == (200, b"B")
        r = sv.pavctl("rollback", "--to", str(gen_a["generation"]), "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["checksum"] == gen_a["checksum"]
        assert get(sv.port) == (200, b"A")
        assert _checksums(sv.status()) == {gen_a["checksum"]}
        r = sv.pavctl("rollback", "--to", gen_b["checksum"][:12])
        assert r.returncode == 0, r.stderr
        assert get(sv.port) == (200, b"B")
        assert sv.pavctl("rollback", "--to", "999999").returncode == EXIT_REJECTED
        assert sv.pavctl("rollback", "--to", "ffffffffffff").returncode == EXIT_REJECTED
        assert get(sv.port) == (200, b"B")


def test_rollback_republishes_a_generation_no_longer_in_shm(tmp_path: Path) -> None:
    with serving(tmp_path, "A") as sv:
        first = sv.status()
        for body in ("B", "C", "D"):
            assert sv.pavctl("reload", str(sv.config(body))).returncode == 0
        assert first["generation"] not in sv.status()["retained"]
        r = sv.pavctl("rollback", "--to", first["checksum"], "--json")
        assert r.returncode == 0, r.stderr
        answer = json.loads(r.stdout)
        assert answer["checksum"] == first["checksum"]
        assert answer["generation"] > first["generation"]
        assert get(sv.port) == (200, b"A")


def test_sighup_reloads_from_the_config_path(tmp_path: Path) -> None:
    with serving(tmp_path, "A") as sv:
        (tmp_path / "A.yaml").write_text((sv.config("B", filename="x.yaml")).read_text())
        assert sv.proc is not None
        sv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: get(sv.port) == (200, b"B"), 10, "SIGHUP reload")
        wait_for(lambda: sv.history()[-1]["outcome"] == "accepted", 10, "history")
        r = sv.pavctl("reload")  # no argument: the config path again, unchanged now
        assert r.returncode == 0 and "unchanged" in r.stdout


def test_admin_listener(tmp_path: Path) -> None:
    with serving(tmp_path, "A") as sv:
        assert get(sv.admin_port, "/ready") == (200, b"ready\n")
        status, body = get(sv.admin_port, "/status")
        st = json.loads(body)
        assert status == 200 and st["name"] == sv.name and len(st["workers"]) == 2
        status, body = get(sv.admin_port, "/metrics")
        text = body.decode()
        assert status == 200
        assert f"pavis_generation {st['generation']}" in text
        assert f'pavis_config_info{{checksum="{st["checksum"]}"}} 1' in text
        assert get(sv.admin_port, "/nope")[0] == 404


def test_client_exit_codes(tmp_path: Path) -> None:
    sv = Serve(tmp_path)
    r = sv.pavctl("status")
    assert r.returncode == EXIT_UNREACHABLE, r.stderr
    r = sv.pavctl("reload", str(tmp_path / "missing.yaml"))
    assert r.returncode == EXIT_USAGE, r.stderr


def test_boot_failure_is_reported(tmp_path: Path) -> None:
    sv = Serve(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nlisteners: []\nnonsense: 1\n")
    try:
        proc = sv.start(bad, ready=False)
        assert proc.wait(30) == 1
        assert "boot failed" in sv.logs()
        # No config and no last-known-good: nothing to boot.
        proc = sv.start(None, ready=False)
        assert proc.wait(30) == 1
        assert "no last-known-good" in sv.logs()
    finally:
        sv.cleanup()


def test_reload_no_wait_answers_at_activation(tmp_path: Path) -> None:
    with serving(tmp_path, "A") as sv:
        r = sv.pavctl("reload", str(sv.config("B")), "--no-wait", "--json")
        assert r.returncode == 0, r.stderr
        answer = json.loads(r.stdout)
        assert answer["outcome"] == "activated"
        wait_for(
            lambda: {w["checksum"] for w in sv.status()["workers"]} == {answer["checksum"]},
            10,
            "every worker on the new generation",
        )
        wait_for(lambda: sv.history()[-1]["outcome"] == "accepted", 10, "the accepted entry")
        assert get(sv.port) == (200, b"B")


# A stand-in worker runtime (the supervisor is under test here, not the worker): it serves
# nothing, acknowledges the generation it booted on, and in slot 0 rejects every other one.
_REJECTING_RUNTIME = """
import select
from shm import Subscriber

def run(name, slot, notify_fd, listeners, wake_fds=()):
    sub = Subscriber(name, slot, notify_fd)
    first = sub.current()
    seg = sub.open(first)
    digest = bytes(seg.data[24:40])
    seg.close()
    sub.ack(first, digest)
    while True:
        select.select([sub.fileno()], [], [], 0.2)
        sub.clear()
        gen = sub.current()
        if gen == first:
            sub.ack(first, digest)
        elif slot == 0:
            sub.reject(gen, "slot 0 refuses on purpose")
        else:
            seg = sub.open(gen)
            sub.ack(gen, bytes(seg.data[24:40]))
            seg.close()
        sub.heartbeat(0)
"""


def test_a_worker_rejecting_the_artifact_flips_everyone_back(tmp_path: Path) -> None:
    fake = tmp_path / "fake" / "workers"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "main.py").write_text(_REJECTING_RUNTIME)
    sv = Serve(tmp_path)
    try:
        sv.start(sv.config("A"), env={"PYTHONPATH": str(tmp_path / "fake")})
        before = sv.status()
        r = sv.pavctl("reload", str(sv.config("B")))
        assert r.returncode == EXIT_REJECTED, (r.stdout, r.stderr)
        assert "slot 0 refuses on purpose" in r.stderr and "flipped back" in r.stderr
        after = sv.status()
        assert after["checksum"] == before["checksum"]
        assert {w["checksum"] for w in after["workers"]} == {before["checksum"]}
        rejection = after["workers"][0]["last_rejection"]
        assert rejection["reason"] == "slot 0 refuses on purpose"
        assert rejection["generation"] > before["generation"]
        last = sv.history()[-1]
        assert (last["op"], last["outcome"]) == ("reload", "rejected")
        assert (sv.state_dir / "last-known-good").read_text().strip() == before["checksum"]
    finally:
        sv.cleanup()
