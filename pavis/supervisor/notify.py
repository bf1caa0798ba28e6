"""sd_notify: tell systemd about readiness, reloads and shutdown (Type=notify).

Owns: the datagram to ``$NOTIFY_SOCKET``. Must not: fail the caller — without systemd, or
with an unreachable socket, notifying is a no-op (returns False).
"""

from __future__ import annotations

import os
import socket
import time


def notify(*fields: str) -> bool:
    """Send ``KEY=value`` fields in one datagram; True if a notify socket took it."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    message = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError:
        return False
    return True


def monotonic_usec() -> str:
    """The MONOTONIC_USEC field systemd wants alongside RELOADING=1."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of systemd's WatchdogSec=), or None if unset.

    systemd sets WATCHDOG_PID to the main process: a forked child must not ping for it.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
