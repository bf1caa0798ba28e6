"""The worker process contract: exit codes, signals and drain, heartbeats, access log."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shm import Publisher, WorkerRejected
from tests.e2e.helpers_worker import Workers, echo, raw, request, seal_yaml
from tests.helpers import config, one_cluster, unique_instance
from tests.upstream import Upstream, launch


@pytest.fixture(scope="module")
def up() -> Iterator[Upstream]:
    u = launch("a")
    yield u
    u.stop()


def _fork_run(name: str, fd: int) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            from workers.main import run

            run(name, 0, fd, {})
        finally:
            os._exit(99)
    return pid


def _wait(pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("worker did not exit")


def test_boot_fails_with_70_without_shm() -> None:
    r, w = os.pipe()
    try:
        assert _wait(_fork_run(unique_instance(), r)) == 70
    finally:
        os.close(r)
        os.close(w)


def test_unusable_first_artifact_exits_71() -> None:
    pub = Publisher(unique_instance(), slots=2)
    try:
        pub.activate(pub.publish(b"PAVS" + bytes(100)))
        fd = pub.open_slot(0)
        assert _wait(_fork_run(pub.name, fd)) == 71
        assert pub.slots()[0].rejected_generation == pub.current
    finally:
        pub.close(unlink=True)


def test_sigterm_drains_in_flight_requests(up: Upstream) -> None:
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(one_cluster(w.port, up.address)))
        out: dict[str, object] = {}

        def slow() -> None:
            status, headers, body = echo(w.port, "/delay/700")
            out["status"] = status
            out["connection"] = headers["Connection"]

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.25)
        os.kill(w.pids[0], signal.SIGTERM)
        assert w.wait_exit(w.pids[0]) == 0
        w.pids.clear()
        t.join(5)
        assert out == {"status": 200, "connection": "close"}


def test_sigquit_exits_at_once(up: Upstream) -> None:
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(one_cluster(w.port, up.address)))
        os.kill(w.pids[0], signal.SIGQUIT)
        assert w.wait_exit(w.pids[0], 5) == 0
        w.pids.clear()


def test_heartbeat_reports_requests(up: Upstream) -> None:
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(one_cluster(w.port, up.address)))
        for _ in range(7):
            assert request(w.port, path="/bytes3")[0] == 200
        deadline = time.monotonic() + 3
        while w.pub.slots()[0].requests < 7:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        info = w.pub.slots()[0]
        assert info.pid == w.pids[0]
        assert info.generation == w.generation


def test_workers_publish_their_open_connections(up: Upstream) -> None:
    """What the acceptors balance on: each worker's open client connections, in its slot,
    following what it accepted and what its clients closed. (Which slot takes a connection
    is timing: slot 1 stands by for slot 0, but takes one when slot 0 is descheduled for
    longer than STANDBY_S, as on a loaded machine; tests/e2e/test_worker_accept.py covers the order.)"""
    from shm import control

    def counts() -> list[int]:
        return [control.read_conns(w.pub._ctl, slot) for slot in (0, 1)]

    def accepted() -> list[int]:
        return [control.read_accepted(w.pub._ctl, slot) for slot in (0, 1)]

    def settle(want: Callable[[list[int]], bool]) -> list[int]:
        deadline = time.monotonic() + 5
        while not want(got := counts()):
            assert time.monotonic() < deadline, got
            time.sleep(0.02)
        return got

    clients: list[http.client.HTTPConnection] = []
    try:
        with Workers(unique_instance(), 2) as w:
            w.start(seal_yaml(one_cluster(w.port, up.address)))
            assert counts() == [0, 0]
            for _ in range(6):
                c = http.client.HTTPConnection("127.0.0.1", w.port, timeout=10)
                clients.append(c)  # kept open: keep-alive
                c.request("GET", "/bytes3")
                assert c.getresponse().read() == b"abc"
            assert settle(lambda got: sum(got) == 6) == accepted()
            for c in clients[:4]:
                c.close()
            settle(lambda got: sum(got) == 2)
            for c in clients[4:]:
                c.close()
            settle(lambda got: got == [0, 0])
            assert sum(accepted()) == 6
            assert control.read_conns(w.pub._ctl, 2) == control.NO_WORKER
    finally:
        for c in clients:
            c.close()


def test_a_stalled_first_worker_does_not_stall_new_clients(up: Upstream) -> None:
    """Slot 1 stands by while slot 0 has room, but only while slot 0 accepts: with slot 0
    stopped (SIGSTOP), new clients are served by slot 1 (one, then two, four... per
    stand-by), and slot 0 takes new ones again once it runs."""
    from shm import control

    def accepted() -> list[int]:
        return [control.read_accepted(w.pub._ctl, slot) for slot in (0, 1)]

    with Workers(unique_instance(), 2) as w:
        w.start(seal_yaml(one_cluster(w.port, up.address)))
        assert request(w.port, path="/bytes3")[0] == 200
        before = accepted()  # [1, 0] unless slot 0 was descheduled past STANDBY_S
        assert sum(before) == 1
        os.kill(w.pids[0], signal.SIGSTOP)
        try:
            results: list[int] = []

            def client() -> None:
                results.append(request(w.port, path="/bytes3")[0])

            threads = [threading.Thread(target=client) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=10)
            assert results == [200] * 6, results
            assert accepted() == [before[0], before[1] + 6]
        finally:
            os.kill(w.pids[0], signal.SIGCONT)
        # Running again, with room: slot 0 takes new clients (the first may still go to
        # slot 1 while slot 0 catches up on its overdue timers).
        for _ in range(20):
            assert request(w.port, path="/bytes3")[0] == 200
            if accepted()[0] > before[0]:
                break
        assert accepted()[0] > before[0], accepted()


def test_listener_change_is_rejected(up: Upstream) -> None:
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(one_cluster(w.port, up.address)))
        other = one_cluster(w.port, up.address).replace("name: public", "name: other")
        with pytest.raises(WorkerRejected, match="listeners_changed"):
            w.flip(seal_yaml(other))
        assert request(w.port, path="/bytes3")[0] == 200


def test_access_log_line(up: Upstream, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    extra = f'access_log: {{path: "{log}"}}\n'
    with Workers(unique_instance(), 1) as w:
        gen = w.start(seal_yaml(one_cluster(w.port, up.address, extra=extra)))
        request(w.port, path="/size/10?q=1", headers={"X-Request-Id": "rid-1", "Host": "h.example"})
        deadline = time.monotonic() + 3
        while not log.exists() or not log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
    rec = json.loads(log.read_text().splitlines()[0])
    assert rec["method"] == "GET"
    assert rec["host"] == "h.example"
    assert rec["path"] == "/size/10?q=1"
    assert rec["status"] == 200
    assert rec["route"] == "all"
    assert rec["cluster"] == "c"
    assert rec["endpoint"] == up.address
    assert rec["bytes"] == 10
    assert rec["request_id"] == "rid-1"
    assert rec["generation"] == gen
    assert rec["client"] == "127.0.0.1"
    assert rec["total_ms"] >= rec["upstream_ms"] >= 0
    assert len(rec["checksum"]) == 32
    assert rec["time"].endswith("Z")


def test_sighup_does_not_stop_a_worker(up: Upstream) -> None:
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(one_cluster(w.port, up.address)))
        os.kill(w.pids[0], signal.SIGHUP)
        time.sleep(0.2)
        assert request(w.port, path="/bytes3")[2] == b"abc"


def test_access_log_counts_the_bytes_of_the_proxy_s_own_answers(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    body = f"""access_log: {{path: "{log}"}}
virtual_hosts:
  - name: main
    domains: [h.example]
    routes:
      - {{name: hello, match: {{prefix: /}}, direct: {{status: 200, body: hello}}}}
"""
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(config(w.port, body)))
        assert request(w.port, path="/x", headers={"Host": "h.example"})[0] == 200
        assert request(w.port, path="/x", headers={"Host": "other.example"})[0] == 404
        raw(w.port, b"GET /a#frag HTTP/1.1\r\nHost: h.example\r\n\r\n")  # 400: a rejected head
        deadline = time.monotonic() + 3
        while len(log.read_text().splitlines() if log.exists() else []) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["status"], r["bytes"]) for r in recs] == [
        (200, len(b"hello")),
        (404, len(b"Not Found\n")),
        (400, len(b"Bad Request\n")),
    ]
    ids = [r["request_id"] for r in recs]
    assert all(ids) and len(set(ids)) == 3, ids  # every line has its own request id
