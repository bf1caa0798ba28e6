"""What unit tests, end-to-end tests and the benchmarks share: ports, names, configs, cleanup.

Owns: free 127.0.0.1 ports, unique shm instance names (segments are ``/pavis.<name>.<gen>``),
the config builders of the tests (a listener on a port, then clusters and virtual hosts),
checks of ``pavctl inspect``'s JSON view, unlinking an instance's shm objects by its exact prefix, and killing and reaping forked
children by pid.
Must not: import ``loadtest`` (the benchmarks import this module, not the other way round),
start processes of its own, or hold state between calls.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import uuid
from typing import Any

SHM = "/dev/shm"


# --------------------------------------------------------------------------- ports and names


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the kernel just handed out on 127.0.0.1 (all bound at once, then
    released, so no two are the same)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """One port the kernel just handed out on 127.0.0.1 (bind port 0, then release it)."""
    return free_ports(1)[0]


def listener(backlog: int = 64) -> tuple[socket.socket, int]:
    """A listening TCP socket on a free 127.0.0.1 port, and that port (kept bound: no race)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(backlog)
    return s, int(s.getsockname()[1])


def unique_instance(prefix: str = "t") -> str:
    """A shm instance name no other run uses: ``<prefix><pid>x<random>``. Tests keep the
    default ``t``, which the leak check of ``tests/conftest.py`` looks for."""
    return f"{prefix}{os.getpid()}x{uuid.uuid4().hex[:8]}"


def shm_entries(instance: str) -> set[str]:
    """What /dev/shm holds of ``instance``: the part after ``pavis.<instance>.`` of each entry
    (``ctl``, ``lock``, generation numbers)."""
    head = f"pavis.{instance}."
    return {e[len(head) :] for e in os.listdir(SHM) if e.startswith(head)}


def remove_instance(*instances: str) -> None:
    """Unlink every /dev/shm entry of these instance names (exact ``pavis.<name>.`` prefix)."""
    prefixes = tuple(f"pavis.{i}." for i in instances)
    for entry in os.listdir(SHM):
        if entry.startswith(prefixes):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{SHM}/{entry}")


# --------------------------------------------------------------------------- processes


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal ``pid``; a process already gone (or no longer ours) is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def kill_and_reap(pids: list[int]) -> None:
    """SIGKILL every one of ``pids`` (this process's forked children) and reap them."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


# --------------------------------------------------------------------------- configs


def config(port: int, body: str, limits: str = "", extra: str = "") -> str:
    """A config with listener ``public`` on ``port``; ``body`` is YAML text placed after it
    (clusters, virtual_hosts...), ``extra`` top-level YAML before it (admin, access_log...)."""
    lim = f"limits: {{{limits}}}\n" if limits else ""
    return (
        f'version: 1\nlisteners:\n  - {{name: public, address: "127.0.0.1:{port}"}}\n'
        f"{lim}{extra}{body}"
    )


def _admin(admin_port: int | None) -> str:
    return f'admin: {{address: "127.0.0.1:{admin_port}"}}\n' if admin_port else ""


def direct_config(port: int, body: str, admin_port: int | None = None, extra: str = "") -> str:
    """Every path answers ``body`` directly (no upstream needed); ``extra`` is YAML of routes
    placed before the catch-all."""
    vhosts = f"""virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
{extra}      - name: body
        match: {{prefix: /}}
        direct: {{status: 200, body: "{body}", content_type: text/plain}}
"""
    return config(port, vhosts, extra=_admin(admin_port))


def one_cluster(
    port: int,
    up_address: str,
    route_extra: str = "",
    cluster_extra: str = "",
    limits: str = "",
    extra: str = "",
    timeout: str = "5s",
    cluster: str = "c",
) -> str:
    """Everything on ``/`` forwards to one upstream (cluster ``c``)."""
    body = f"""clusters:
  - name: {cluster}
    endpoints: ["{up_address}"]
{cluster_extra}virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - name: all
        match: {{prefix: /}}
        forward: {{cluster: {cluster}, timeout: {timeout}}}
{route_extra}"""
    return config(port, body, limits, extra)


def forward_config(port: int, upstream: str, admin_port: int | None = None) -> str:
    """Everything forwards to the test upstream at ``upstream`` (host:port) as cluster ``up``,
    30 s per try."""
    return one_cluster(port, upstream, extra=_admin(admin_port), timeout="30s", cluster="up")


# Every route but the last is one a hostile request might want to skip or reach: /admin is
# blocked by an exact match, X-Debug by a header matcher, /p/ is answered by the proxy itself.
ROUTES = """      - name: admin
        match: {exact: /admin}
        direct: {status: 403, body: "admin blocked"}
      - name: debug
        match: {prefix: /, headers: [{name: x-debug, present: true}]}
        direct: {status: 403, body: "debug blocked"}
      - name: local
        match: {prefix: /p/}
        direct: {status: 200, body: "p"}
      - name: all
        match: {prefix: PREFIX}
        forward: {cluster: c, timeout: 5s}
"""


def routing_config(port: int, up_address: str, extra: str = "", prefix: str = "/") -> str:
    """The request framing tests' config: ``prefix`` is what the forwarding route matches;
    nothing else reaches the upstream."""
    body = (
        f'clusters:\n  - name: c\n    endpoints: ["{up_address}"]\n'
        f'virtual_hosts:\n  - name: main\n    domains: ["*"]\n    routes:\n'
        + ROUTES.replace("PREFIX", prefix)
    )
    return config(port, body, extra=extra)


# --------------------------------------------------------------------------- artifact views


def no_nulls(value: Any, path: str = "$") -> list[str]:
    """The JSON paths under ``value`` that hold null (``pavctl inspect`` writes none)."""
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in no_nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in no_nulls(v, f"{path}[{i}]")]
    return []


def has_matplotlib() -> bool:
    """Whether the optional plotting library is installed (plots are skipped without it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
