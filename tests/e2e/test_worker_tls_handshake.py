"""The downstream TLS handshake is bounded and quiet: a client that connects and sends
nothing, or half a ClientHello, is cut off after header_timeout; failed handshakes (plain
HTTP to the TLS port) are one log line per interval, never a traceback each; the listener
keeps serving real clients throughout."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

from tests.e2e.helpers_proc import Serve, needs_workers
from tests.e2e.helpers_tls import self_signed

pytestmark = needs_workers


def _config(sv: Serve, crt: Path, key: Path) -> Path:
    path = sv.tmp / "tls.yaml"
    path.write_text(f"""version: 1
listeners:
  - name: public
    address: "127.0.0.1:{sv.port}"
    tls: {{cert: "{crt}", key: "{key}"}}
limits: {{header_timeout: 1s}}
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - {{name: body, match: {{prefix: /}}, direct: {{status: 200, body: "served"}}}}
""")
    return path


def _cut_off_within(sock: socket.socket, seconds: float) -> bool:
    """True when the worker closes (or resets) ``sock`` within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _served(port: int) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="a.test") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
    return data


def test_clients_that_leave_right_after_the_handshake_do_not_kill_the_worker(
    tmp_path: Path,
) -> None:
    """TLS 1.3 sends session tickets after the handshake: to a client already gone, that
    write fails with EPIPE — for that connection only."""
    sv = Serve(tmp_path, workers=1)
    crt, key = self_signed(tmp_path, "a.test")
    try:
        sv.start(_config(sv, crt, key))
        (before,) = [w["pid"] for w in sv.status()["workers"]]
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", sv.port), timeout=5) as raw:
                ctx.wrap_socket(raw, server_hostname="a.test").close()
        time.sleep(0.5)
        assert _served(sv.port).endswith(b"served")
        (after,) = [w["pid"] for w in sv.status()["workers"]]
        assert after == before, "the worker was replaced"
        assert "SIGPIPE" not in sv.log.read_text()
    finally:
        sv.cleanup()


def test_a_stalled_handshake_is_cut_off_and_failures_do_not_flood_the_log(tmp_path: Path) -> None:
    sv = Serve(tmp_path, workers=1)
    crt, key = self_signed(tmp_path, "a.test")
    stalled: list[socket.socket] = []
    try:
        sv.start(_config(sv, crt, key))
        silent = socket.create_connection(("127.0.0.1", sv.port))
        half = socket.create_connection(("127.0.0.1", sv.port))
        stalled += [silent, half]
        half.sendall(b"\x16\x03\x01\x00\xff\x01")  # a ClientHello that never ends
        assert _served(sv.port).endswith(b"served")  # a real client meanwhile
        assert _cut_off_within(silent, 8.0)  # header_timeout is 1s; without a bound: never
        assert _cut_off_within(half, 8.0)
        # A ClientHello dripped a byte at a time, each well inside header_timeout: the bound
        # is on the whole handshake, not on each wait.
        drip = socket.create_connection(("127.0.0.1", sv.port))
        stalled.append(drip)
        drip.sendall(b"\x16\x03\x01\x00\xff")  # a record of 255 bytes: ~20 of them follow
        deadline, cut = time.monotonic() + 8.0, False
        while not cut and time.monotonic() < deadline:
            try:
                drip.sendall(b"\x00")
            except (BrokenPipeError, ConnectionResetError):
                break  # cut off while dripping
            cut = _cut_off_within(drip, 0.4)  # also the pause between two bytes
        else:
            assert cut, "a dripped handshake was never cut off"
        for _ in range(20):  # plain HTTP to the TLS port: each one a failed handshake
            with socket.create_connection(("127.0.0.1", sv.port), timeout=5) as plain:
                plain.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                assert _cut_off_within(plain, 5.0)
        assert _served(sv.port).endswith(b"served")
        time.sleep(0.2)  # the worker's stderr reaches the log file
        log = sv.log.read_text()
        assert "Traceback" not in log, log
        lines = [ln for ln in log.splitlines() if "TLS handshake from 127.0.0.1 failed" in ln]
        assert 1 <= len(lines) <= 3, lines  # one per 10 s interval, not one per failure
    finally:
        for s in stalled:
            s.close()
        sv.cleanup()
