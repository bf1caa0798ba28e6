"""workers.io deadlines, in a subprocess (gevent never runs inside the pytest process).

A wait past its deadline raises TimeoutError within one watchdog tick; completed waits leave
nothing armed; data, EOF and large sends behave like plain sockets.
"""

from __future__ import annotations

from tests.e2e.helpers_worker import run_program


def test_stream_deadlines_and_eof() -> None:
    run_program("io_deadlines")


def test_send_soon_batches_writes_until_the_loop_runs() -> None:
    run_program("io_send_soon")
