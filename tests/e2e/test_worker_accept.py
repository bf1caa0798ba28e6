"""workers.accept, in a subprocess (gevent never runs inside the pytest process).

Accepted connections are bare non-blocking sockets; handler greenlets are parked and reused
from one connection to the next (a new greenlet per connection costs CPython a fresh
interpreter data stack, an mmap and an munmap), at most IDLE_MAX of them; a handler that
raises does not take the worker down, and closing the acceptor ends the parked handlers.
A wake-up takes one connection, and more only while this worker holds fewer than FILL
connections or no more than the least loaded other worker (plus an eighth, plus one); every
connection is counted while it is open, and every one accepted, in the words other workers
read. A worker leaves connections to the workers in lower slots while one of them holds
fewer than FILL and keeps accepting; when they stop accepting it takes what waits, one
connection after the first STANDBY_S, then twice as many per STANDBY_S while they stay
stalled. A worker that fills up (or retires) wakes the workers after it through their
eventfds, so one standing by joins at once. A worker out of descriptors pauses accepting,
every time it runs out.
"""

from __future__ import annotations

from tests.e2e.helpers_worker import run_program


def test_acceptor() -> None:
    r = run_program("accept_handlers")
    assert "RuntimeError: handler failed" in r.stderr  # reported, not swallowed


def test_a_wakeup_takes_more_than_one_connection_only_while_this_worker_is_least_loaded() -> None:
    run_program("accept_batch")


def test_a_worker_leaves_connections_to_lower_slots_with_room_until_they_stop_accepting() -> None:
    run_program("accept_standby")


def test_a_worker_that_fills_up_wakes_the_one_standing_by_for_it() -> None:
    run_program("accept_wake")


def test_a_worker_out_of_descriptors_pauses_accepting_every_time() -> None:
    r = run_program("accept_pause")
    pauses = int(r.stderr.split("errors ")[-1].split()[0])  # one failed attempt per pause
    assert 3 <= pauses <= 9, r.stderr[-2000:]  # a timer started again must wait again
    assert r.stderr.count("pausing") == 1, r.stderr[-2000:]  # said once, not per attempt
