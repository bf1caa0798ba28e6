"""Conditions the supervisor's listeners meet (clients hanging up, descriptor exhaustion...):
one log line per condition per ``QUIET_S``, and a counter per condition for /metrics.

Owns: the counters and the rate limit. Must not: decide anything about the condition itself.
"""

from __future__ import annotations

import logging
import threading
import time

QUIET_S = 10.0  # one line per condition and interval; the counter says how many there were

_lock = threading.Lock()
_counts: dict[str, int] = {}
_last_logged: dict[str, float] = {}
_unlogged: dict[str, int] = {}


def note(log: logging.Logger, level: int, event: str, message: str, *args: object) -> None:
    """Count ``event``; log ``message`` unless the same event was logged within QUIET_S."""
    now = time.monotonic()
    with _lock:
        _counts[event] = _counts.get(event, 0) + 1
        last = _last_logged.get(event)
        if last is not None and now - last < QUIET_S:
            _unlogged[event] = _unlogged.get(event, 0) + 1
            return
        _last_logged[event] = now
        skipped = _unlogged.pop(event, 0)
    suffix = f" ({skipped} more since the last such line)" if skipped else ""
    log.log(level, message + suffix, *args)


def counts() -> dict[str, int]:
    """Every condition met so far and how often (for ``pavis_control_events_total``)."""
    with _lock:
        return dict(_counts)
