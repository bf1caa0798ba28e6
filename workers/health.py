"""Endpoint health as this worker sees it: active HTTP probes and passive outlier ejection.

Owns: the probe greenlet of one endpoint (``HealthCheck``: interval, timeout, thresholds,
expected statuses) and the consecutive-failure ejection of ``Outlier``, which always expires
after ``eject_ms`` — nothing is learned beyond the condition that caused it: reaction, never learning.
Every change of verdict (probes) and every ejection is counted (``downs``, ``ups``,
``ejections``: the worker's metrics snapshot carries them) and logged on stderr, one line each.
Must not: pick endpoints or touch pools; the balancer asks ``healthy()``.
"""

from __future__ import annotations

import os
import sys
import time

import gevent

from pavis.schema import HealthCheck, HealthCheckOff, Outlier, OutlierOff, TlsOff, UpstreamTls
from workers.upstream import UpstreamError, connect, literal_family


class Health:
    __slots__ = (
        "host",
        "port",
        "family",
        "check",
        "outlier",
        "tls",
        "probe_ok",
        "ejected_until",
        "failures",
        "streak",
        "greenlet",
        "ejections",
        "downs",
        "ups",
    )

    def __init__(
        self,
        host: str,
        port: int,
        check: HealthCheckOff | HealthCheck,
        outlier: OutlierOff | Outlier,
        tls: TlsOff | UpstreamTls,
    ) -> None:
        self.host = host
        self.port = port
        self.family = literal_family(host)
        self.check = check
        self.outlier = outlier
        self.tls = tls
        self.probe_ok = True  # optimistic until the first probes say otherwise
        self.ejected_until = 0.0
        self.failures = 0
        self.streak = 0  # consecutive probe results against the current verdict
        self.greenlet: gevent.Greenlet | None = None
        self.ejections = 0
        self.downs = 0  # verdicts turned unhealthy by active probes
        self.ups = 0  # verdicts turned healthy again

    def healthy(self) -> bool:
        if not self.probe_ok:
            return False
        until = self.ejected_until
        if until:
            if time.monotonic() < until:
                return False
            self.ejected_until = 0.0
        return True

    # ------------------------------------------------------------------ passive

    def record(self, ok: bool) -> None:
        """Outcome of one proxied exchange with this endpoint. Failures are connect errors,
        resets, timeouts, bad responses and 5xx statuses (like Envoy's consecutive_5xx)."""
        if ok:
            self.failures = 0
            return
        outlier = self.outlier
        if isinstance(outlier, Outlier):
            self.failures += 1
            if self.failures >= outlier.consecutive_failures:
                self.failures = 0
                self.ejected_until = time.monotonic() + outlier.eject_ms / 1000.0
                self.ejections += 1
                _log(f"endpoint {self.host}:{self.port} ejected for {outlier.eject_ms / 1000:g}s "
                     f"after {outlier.consecutive_failures} consecutive failures")  # fmt: skip

    # ------------------------------------------------------------------ active

    def start(self) -> None:
        if isinstance(self.check, HealthCheck) and self.greenlet is None:
            self.greenlet = gevent.spawn(self._loop, self.check)

    def stop(self) -> None:
        g, self.greenlet = self.greenlet, None
        if g is not None:
            g.kill(block=False)

    def _loop(self, check: HealthCheck) -> None:
        while True:
            ok = self.probe(check)
            if ok == self.probe_ok:
                self.streak = 0
            else:
                self.streak += 1
                need = check.healthy_after if ok else check.unhealthy_after
                if self.streak >= need:
                    self.probe_ok = ok
                    self.streak = 0
                    self._turned(ok, need, check.path)
            gevent.sleep(check.interval_ms / 1000.0)

    def _turned(self, ok: bool, need: int, path: str) -> None:
        if ok:
            self.ups += 1
        else:
            self.downs += 1
        verdict = "healthy again" if ok else "unhealthy"
        what = ("passing" if ok else "failed") + (" probe" if need == 1 else " probes")
        _log(f"endpoint {self.host}:{self.port} {verdict} after {need} {what} of {path}")

    def probe(self, check: HealthCheck) -> bool:
        timeout = check.timeout_ms / 1000.0
        request = (
            f"GET {check.path} HTTP/1.1\r\nHost: {check.host}\r\n"
            "User-Agent: pavis-health\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        deadline = time.monotonic() + timeout
        try:
            sock = connect(self.host, self.port, self.family, timeout, self.tls)
        except UpstreamError:
            return False
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.sendall(request)
            head = b""
            while b"\r\n" not in head and len(head) < 1024:
                data = sock.recv(1024)
                if not data:
                    break
                head += data
            parts = head.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                return False
            return int(parts[1]) in check.expected_statuses
        except (TimeoutError, OSError):
            return False
        finally:
            sock.close()


def _log(message: str) -> None:
    print(f"pavis worker (pid {os.getpid()}): {message}", file=sys.stderr)
