"""Run wrk against a loopback URL and parse what it measured.

Owns: building the wrk command line, bounding its run time, and turning its output into a
``WrkResult`` (requests, req/s, p50/p99, socket errors by kind, non-2xx/3xx responses).
Must not: start the server under test or judge the figures.

By default a tiny Lua ``done`` hook prints wrk's own summary as JSON (exact counters and
latency percentiles in microseconds); with a caller's script the text from ``--latency`` is
parsed instead. A ``done``-only script keeps wrk on its static-request fast path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

_DONE_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


def available() -> str | None:
    """Path of the wrk binary, or None."""
    return shutil.which("wrk")


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int] = field(default_factory=dict)  # connect/read/write/timeout
    non2xx: int = 0  # wrk counts responses with status > 399 ("Non-2xx or 3xx")
    command: str = ""

    @property
    def socket_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def failed(self) -> int:
        return self.socket_errors + self.non2xx

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["socket_errors"] = self.socket_errors
        d["failed"] = self.failed
        return d


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_json(out: str) -> WrkResult | None:
    """The result printed by the built-in ``done`` hook, or None if absent."""
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            d = json.loads(line[8:])
            dur = d["duration_us"] / 1e6
            return WrkResult(
                requests=d["requests"],
                duration_s=dur,
                rps=d["requests"] / dur if dur else 0.0,
                p50_ms=d["p50_us"] / 1000,
                p99_ms=d["p99_us"] / 1000,
                errors={k: d[k] for k in ("connect", "read", "write", "timeout")},
                non2xx=d["status"],
            )
    return None


def parse_text(out: str) -> WrkResult:
    """Parse wrk's human output (needs ``--latency`` for the percentiles)."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if not m:
        raise ValueError(f"no request count in wrk output:\n{out}")
    requests = int(m.group(1))
    dur = _ms(m.group(2) + m.group(3)) / 1000
    pct = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+(?:us|ms|s|m))\s*$", out, re.M))
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if e:
        errors = dict(zip(errors, map(int, e.groups()), strict=True))
    n = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return WrkResult(
        requests=requests,
        duration_s=dur,
        rps=float(rps.group(1)) if rps else requests / dur,
        p50_ms=_ms(pct["50"]) if "50" in pct else float("nan"),
        p99_ms=_ms(pct["99"]) if "99" in pct else float("nan"),
        errors=errors,
        non2xx=int(n.group(1)) if n else 0,
    )


def run(
    url: str,
    *,
    connections: int,
    duration: float,
    threads: int = 2,
    headers: Sequence[str] = (),
    script: str | None = None,
    timeout_s: float = 2.0,  # wrk takes whole seconds
) -> WrkResult:
    """Run wrk for ``duration`` seconds (whole seconds, at least 1) and parse its result.

    ``headers`` are raw ``'Name: value'`` strings (e.g. ``'Connection: close'``). With
    ``script`` (a Lua file path) the text output is parsed instead of the JSON hook.
    """
    binary = available()
    if binary is None:
        raise FileNotFoundError("wrk is not installed")
    secs = max(1, round(duration))
    threads = max(1, min(threads, connections))
    cmd = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{secs}s",
        f"--timeout={max(1, round(timeout_s))}s",
    ]
    for h in headers:
        cmd += ["-H", h]
    tmp = None
    try:
        if script is None:
            fd, tmp = tempfile.mkstemp(suffix=".lua", prefix="pavis-wrk-")
            with os.fdopen(fd, "w") as f:
                f.write(_DONE_LUA)
            cmd += ["-s", tmp]
        else:
            cmd += ["-s", script, "--latency"]
        cmd.append(url)
        # wrk stops itself after -d; the subprocess timeout is only a backstop.
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 30, check=False)
    finally:
        if tmp:
            os.unlink(tmp)
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip())[-500:]
        raise RuntimeError(f"wrk failed ({proc.returncode}): {msg}")
    result = parse_json(proc.stdout) if script is None else None
    if result is None:
        result = parse_text(proc.stdout)
    shown = [c if c != tmp else "<done.lua>" for c in cmd]
    result.command = " ".join(f"'{c}'" if " " in c else c for c in shown)
    return result
