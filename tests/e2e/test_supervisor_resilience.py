"""The process model under failure: dead, hung and orphaned workers, a killed supervisor,
and graceful stop. Invariant: whatever dies, the listeners keep answering with the generation
the supervisor last made current, and nothing of the instance is left in /dev/shm.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.helpers_proc import Serve, get, needs_workers, pid_alive, serving, wait_for
from tests.helpers import forward_config, kill_pid
from tests.upstream import Upstream

pytestmark = needs_workers


class Load:
    """Keep-alive-less GET clients in threads, counting outcomes."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port = port
        self.ok = 0
        self.failed = 0
        self.bodies: set[bytes] = set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = get(self.port)
            except OSError:
                self.failed += 1
                continue
            if status == 200:
                self.ok += 1
                self.bodies.add(body)
            else:
                self.failed += 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def test_killed_worker_is_replaced_and_serves_the_current_generation(tmp_path: Path) -> None:
    with serving(tmp_path, "A") as sv:
        assert sv.pavctl("reload", str(sv.config("B"))).returncode == 0
        st = sv.status()
        victim = st["workers"][0]["pid"]
        with Load(sv.port) as load:
            time.sleep(0.5)
            kill_pid(victim, signal.SIGKILL)

            def replaced() -> bool:
                w = sv.status()["workers"][0]
                return bool(w["pid"] and w["pid"] != victim and w["checksum"] == st["checksum"])

            wait_for(replaced, 20, "a replacement worker on the current generation")
            time.sleep(0.5)
        assert load.ok > 0 and load.bodies == {b"B"}
        after = sv.status()
        assert after["ready"] and after["workers"][0]["restarts"] == 1
        assert "SIGKILL" in after["workers"][0]["last_exit"]
        assert {w["checksum"] for w in after["workers"]} == {st["checksum"]}


def test_hung_worker_is_killed_and_replaced(tmp_path: Path) -> None:
    with serving(tmp_path, "A") as sv:
        victim = sv.status()["workers"][1]["pid"]
        wait_for(lambda: sv.status()["workers"][1]["heartbeat_age_s"] is not None, 10, "heartbeat")
        os.kill(victim, signal.SIGSTOP)
        try:
            wait_for(
                lambda: sv.status()["workers"][1]["pid"] not in (None, victim), 30, "replacement"
            )
        finally:
            kill_pid(victim)
        assert "hung" in sv.logs()
        sv.wait_ready()
        assert get(sv.port) == (200, b"A")


def test_a_suspended_instance_is_not_mistaken_for_hung_workers(tmp_path: Path) -> None:
    """SIGSTOP of supervisor and workers alike (Ctrl-Z, a paused VM): after SIGCONT every
    heartbeat is old, but nobody was hung — no worker is killed."""
    with serving(tmp_path, "A") as sv:
        assert sv.proc is not None
        pids = [sv.proc.pid] + [w["pid"] for w in sv.status()["workers"]]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(11)  # longer than the heartbeat timeout
        for pid in reversed(pids):
            os.kill(pid, signal.SIGCONT)
        time.sleep(1.5)
        st = sv.status()
        assert [w["pid"] for w in st["workers"]] == pids[1:]
        assert "hung" not in sv.logs() and "grace period" in sv.logs()
        assert get(sv.port) == (200, b"A")


def test_killed_supervisor_leaves_workers_serving_and_a_new_one_reclaims(tmp_path: Path) -> None:
    sv = Serve(tmp_path)
    try:
        sv.start(sv.config("A"))
        assert sv.pavctl("reload", str(sv.config("B"))).returncode == 0
        st = sv.status()
        assert sv.proc is not None
        sv.proc.kill()
        sv.proc.wait()
        # Orphaned workers keep serving the generation they have.
        for _ in range(20):
            assert get(sv.port) == (200, b"B")
        orphans = [w["pid"] for w in st["workers"]]
        assert all(pid_alive(p) for p in orphans)
        leftovers = sorted(p.name for p in Path("/dev/shm").glob(f"pavis.{sv.name}.*"))
        assert leftovers, "segments stay while the supervisor is dead"
        for pid in orphans:
            kill_pid(pid)
        wait_for(lambda: not any(pid_alive(p) for p in orphans), 10, "orphans to die")
        # A new supervisor, same name and state dir, no config: boots the last-known-good.
        sv.start(None)
        st2 = sv.status()
        assert st2["checksum"] == st["checksum"]
        assert st2["source"] == f"last-known-good {st['checksum']}"
        assert st2["generation"] > st["generation"]  # names are never reused
        assert get(sv.port) == (200, b"B")
        now = {p.name for p in Path("/dev/shm").glob(f"pavis.{sv.name}.*")}
        assert not {f"pavis.{sv.name}.{g}" for g in st["retained"]} & now  # reclaimed
        assert sv.history()[-1]["op"] == "boot"
        assert sv.stop() == 0
        assert not list(Path("/dev/shm").glob(f"pavis.{sv.name}.*"))
    finally:
        sv.cleanup()


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    sv = Serve(tmp_path)
    try:
        sv.start(sv.config("A"))
        pids = [w["pid"] for w in sv.status()["workers"]]
        assert sv.proc is not None
        sv.proc.send_signal(signal.SIGUSR1)  # must not kill the supervisor (nor the workers)
        wait_for(lambda: "SIGUSR1: 2 workers reopen" in sv.logs(), 5, "SIGUSR1 to be handled")
        assert sv.proc.poll() is None and sv.status()["ready"]
        assert sv.stop(signal.SIGTERM) == 0
        assert not any(pid_alive(p) for p in pids)
        assert not os.path.exists(sv.control)
        assert not list(Path("/dev/shm").glob(f"pavis.{sv.name}.*"))
        assert "stopped" in sv.logs()
    finally:
        sv.cleanup()


def test_sigquit_stops_at_once(tmp_path: Path) -> None:
    sv = Serve(tmp_path)
    try:
        sv.start(sv.config("A"))
        pids = [w["pid"] for w in sv.status()["workers"]]
        assert sv.stop(signal.SIGQUIT) == 0
        assert not any(pid_alive(p) for p in pids)
    finally:
        sv.cleanup()


def test_a_second_supervisor_with_the_same_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with serving(tmp_path / "one") as sv:
        other = Serve(tmp_path / "two", name=sv.name)
        try:
            proc = other.start(other.config("B"), ready=False)
            assert proc.wait(30) == 1
            assert "held by a live supervisor" in other.logs()
        finally:
            other.stop()
        assert get(sv.port) == (200, b"A")


def test_sigterm_lets_a_slow_request_finish(
    tmp_path: Path, upstreams: Callable[..., Upstream]
) -> None:
    up = upstreams("slow")
    sv = Serve(tmp_path)
    try:
        config = tmp_path / "fwd.yaml"
        config.write_text(forward_config(sv.port, up.address, sv.admin_port))
        sv.start(config)
        assert get(sv.admin_port, "/ready")[0] == 200
        result: list[tuple[int, bytes]] = []
        client = threading.Thread(target=lambda: result.append(get(sv.port, "/delay/2500", 20)))
        client.start()
        time.sleep(0.5)  # the request is now in flight, waiting on the upstream
        assert sv.proc is not None
        sv.proc.send_signal(signal.SIGTERM)
        # Draining: the health check fails at once so load balancers move away.
        wait_for(lambda: get(sv.admin_port, "/ready")[0] == 503, 2, "/ready to fail")
        assert sv.stop(signal.SIGTERM) == 0
        client.join()
        assert result and result[0][0] == 200
        assert b"/delay/2500" in result[0][1]
    finally:
        sv.cleanup()


def test_reload_that_times_out_flips_everyone_back(tmp_path: Path) -> None:
    with serving(tmp_path, "A") as sv:
        before = sv.status()
        stuck = before["workers"][0]["pid"]
        os.kill(stuck, signal.SIGSTOP)  # alive but never acknowledges
        try:
            r = sv.pavctl("reload", str(sv.config("B")), "--timeout", "1")
        finally:
            os.kill(stuck, signal.SIGCONT)
        assert r.returncode == 4, (r.stdout, r.stderr)
        assert "flipped back" in r.stderr
        after = sv.status()
        assert after["checksum"] == before["checksum"]
        wait_for(
            lambda: {w["checksum"] for w in sv.status()["workers"]} == {before["checksum"]},
            10,
            "every worker back on the old generation",
        )
        for _ in range(10):
            assert get(sv.port) == (200, b"A")
        last = sv.history()[-1]
        assert (last["op"], last["outcome"]) == ("reload", "timeout")
        assert (sv.state_dir / "last-known-good").read_text().strip() == before["checksum"]


def test_workers_that_cannot_boot_stop_the_supervisor(tmp_path: Path) -> None:
    """A worker runtime that exits 70 at once: the supervisor halts instead of looping."""
    fake = tmp_path / "fake" / "workers"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "main.py").write_text("import sys\n\ndef run(*args):\n    sys.exit(70)\n")
    sv = Serve(tmp_path)
    try:
        proc = sv.start(sv.config("A"), env={"PYTHONPATH": str(tmp_path / "fake")}, ready=False)
        assert proc.wait(30) == 1
        assert "failed to boot 3 times in a row" in sv.logs()
        assert not list(Path("/dev/shm").glob(f"pavis.{sv.name}.*"))
    finally:
        sv.cleanup()


def test_a_new_supervisor_takes_over_from_orphaned_workers_holding_the_port(
    tmp_path: Path,
) -> None:
    sv = Serve(tmp_path)
    try:
        sv.start(sv.config("A"))
        # The last-known-good pointer is written when the loop sees every worker ready.
        wait_for(lambda: "ready: every worker serves" in sv.logs(), 10, "last-known-good")
        orphans = [w["pid"] for w in sv.status()["workers"]]
        sv.worker_pids.update(orphans)  # killed in cleanup if the takeover fails
        assert sv.proc is not None
        sv.proc.kill()
        sv.proc.wait()
        assert get(sv.port) == (200, b"A")  # the orphans still serve, and hold the port
        # A new supervisor of the same name: it does not fail on the busy port, it makes the
        # orphans drain and exit, binds, and serves the last-known-good with its own workers.
        sv.start(None)
        st = sv.status()
        assert st["source"].startswith("last-known-good")
        wait_for(lambda: not any(pid_alive(p) for p in orphans), 15, "orphans to exit")
        assert not {w["pid"] for w in st["workers"]} & set(orphans)
        assert get(sv.port) == (200, b"A")
        assert "taking over from 2 worker(s) of a dead supervisor" in sv.logs()
        assert sv.stop() == 0
    finally:
        sv.cleanup()
