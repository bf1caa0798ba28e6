"""What the data-plane benchmark reads off the proxies' processes and listeners.

Owns: CPU seconds of a process tree (reaped children included), PSS of a tree, whether a
worker is alive (a zombie is not), waiting for a proxy's workers to be back, the holder
process of the idle connections (``loadtest.idle_conns``) and its line protocol, and the TLS
probes (the certificate presented for a server name; how many new connections resume a
session).
Must not: start proxies, run wrk, or judge figures.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import time

from loadtest import procstat, servers
from loadtest.dataplane_setup import Proxy


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process (``Pss`` of /proc/PID/smaps_rollup); 0 if gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def tree_pss(root: int) -> int:
    return sum(pss_bytes(p) for p in procstat.tree(root))


def tree_cpu_s(root: int) -> float:
    """utime+stime of ``root`` and its living descendants, plus what the children ``root``
    reaped used (its cutime+cstime): a worker that dies in a run still counts up to its death
    once the supervisor or master has reaped it."""
    try:
        with open(f"/proc/{root}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    reaped = (int(fields[13]) + int(fields[14])) / procstat.CLK_TCK
    return reaped + sum(procstat.cpu_seconds(p) for p in procstat.tree(root))


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return raw[raw.rindex(")") + 2 :].split()[0] != "Z"


def wait_workers(proxy: Proxy, count: int, timeout: float = 15.0) -> list[int]:
    """The proxy's worker pids once it has ``count`` of them again (after a worker died)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = proxy.worker_pids()
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


class IdleHolder:
    """``loadtest.idle_conns`` holding ``count`` keep-alive connections open on ``port``."""

    def __init__(self, port: int, count: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadtest.idle_conns", "--port", str(port),
             "--count", str(count)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=servers.REPO,
        )  # fmt: skip

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def ready(self) -> int:
        line = self._line()
        if not line.startswith("ready "):
            raise RuntimeError(f"idle connections: {line or 'the holder exited'}")
        return int(line.split()[1])

    def still_open(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write("check\n")
        self.proc.stdin.flush()
        return int(self._line().split()[1])

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def peer_cn(port: int, sni: str) -> str:
    """The subject CN of the certificate a TLS listener presents for ``sni``."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=sni) as s,
        ):
            der = s.getpeercert(binary_form=True)
            # One exchange before closing, as a client does (a handshake alone, closed at
            # once, is not what this check is about).
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: sni.check\r\nConnection: close\r\n\r\n")
            while s.recv(4096):
                pass
    except OSError as exc:
        return f"(handshake failed: {exc})"
    if der is None:
        return "(no certificate)"
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else "(no CN)"


def resumed(port: int, sni: str, tries: int = 8) -> int:
    """How many of ``tries`` new connections resumed the previous connection's TLS session
    (wrk resumes too, so a proxy that cannot pays a full handshake per connection)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    session = None
    reused = 0
    for _ in range(tries + 1):
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname=sni, session=session) as s,
            ):
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: tls.check\r\nConnection: close\r\n\r\n")
                while s.recv(4096):  # TLS 1.3 tickets arrive with the answer
                    pass
                reused += int(session is not None and bool(s.session_reused))
                session = s.session
        except OSError:
            session = None
    return reused
