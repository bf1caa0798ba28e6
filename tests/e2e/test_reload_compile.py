"""Compiling outside the supervisor: a config is compiled in a short-lived child process under
a memory and a time limit, before the generation lock is taken.

Real supervisors with small limits set through the environment they read
(PAVIS_COMPILE_MEMORY_MB, PAVIS_COMPILE_TIMEOUT_S) and real oversized configs: a config whose
compile needs too much memory or too much time is rejected with that reason and recorded in
history, a compile process that dies by a signal is reported as a crash, and the supervisor
keeps serving. Worker upkeep (respawning a killed worker) goes on while a compile runs.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

from pavis.control_client import exchange
from tests.e2e.helpers_proc import CLI, Serve, children, get, needs_workers, wait_for
from tests.helpers import kill_pid

pytestmark = needs_workers


def routes(n: int, anchored: bool = False) -> str:
    """``n`` extra direct routes for a config (each compiles into its own table entry).

    ``anchored`` gives each route a YAML anchor (never aliased): the document then takes
    PyYAML's path, which needs far more memory and time than the fast path for plain
    documents, so a compile reliably outgrows a small limit or outlasts a short one.
    """
    return "".join(
        f"      - {f'&r{i} ' if anchored else ''}"
        f'{{name: r{i}, match: {{prefix: /p{i}/}}, direct: {{status: 200, body: "x"}}}}\n'
        for i in range(n)
    )


def reload_answer(sv: Serve, path: Path) -> dict[str, Any]:
    return exchange(sv.control, {"op": "reload", "path": str(path), "timeout": 30}, 120.0)


def workers_of(sv: Serve) -> set[int]:
    return {w["pid"] for w in sv.status()["workers"] if w["pid"]}


def compile_children(sv: Serve) -> set[int]:
    assert sv.proc is not None
    return children(sv.proc.pid) - workers_of(sv)


def assert_still_serving(sv: Serve, body: bytes = b"A") -> None:
    st = sv.status()
    assert st["ready"] and st["generation"] == 1
    assert get(sv.port) == (200, body)
    # Only the workers are left: the compile process is gone (killed and reaped).
    wait_for(lambda: not compile_children(sv), 10, "the compile process to be gone")


def test_a_compile_over_the_memory_limit_is_rejected_and_the_supervisor_serves_on(
    sv: Serve,
) -> None:
    sv.start(sv.config("A"), env={"PAVIS_COMPILE_MEMORY_MB": "60"})
    big = sv.config("B", extra=routes(20000, anchored=True))
    answer = reload_answer(sv, big)
    assert answer["ok"] is False and answer["error"] == "compile_memory", answer
    assert "60 MiB" in answer["reason"] and "PAVIS_COMPILE_MEMORY_MB" in answer["reason"]
    r = sv.pavctl("reload", str(big))
    assert r.returncode == 1
    assert "more than 60 MiB of memory" in r.stderr
    last = sv.history()[-1]
    assert (last["op"], last["outcome"], last["source"]) == ("reload", "rejected", str(big))
    assert "memory" in last["reason"]
    assert_still_serving(sv)
    # A config within the limit is still compiled and served.
    r = sv.pavctl("reload", str(sv.config("C")))
    assert r.returncode == 0, r.stderr
    assert get(sv.port) == (200, b"C")


def test_a_compile_over_the_time_limit_is_stopped_and_rejected(sv: Serve) -> None:
    sv.start(sv.config("A"), env={"PAVIS_COMPILE_TIMEOUT_S": "1"})
    big = sv.config("B", extra=routes(30000, anchored=True))
    answer = reload_answer(sv, big)
    assert answer["ok"] is False and answer["error"] == "compile_timeout", answer
    assert "longer than 1 s" in answer["reason"]
    last = sv.history()[-1]
    assert last["outcome"] == "rejected" and "longer than 1 s" in last["reason"]
    assert_still_serving(sv)


def test_a_compile_process_killed_by_a_signal_is_a_crash(sv: Serve) -> None:
    sv.start(sv.config("A"))
    big = sv.config("B", extra=routes(40000, anchored=True))
    reload = subprocess.Popen(
        [*CLI, "reload", str(big), "--control", sv.control],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        child = wait_for(lambda: compile_children(sv), 20, "a compile process")
        for pid in child:
            kill_pid(pid, signal.SIGSEGV)
        _, err = reload.communicate(timeout=60)
    finally:
        if reload.poll() is None:
            reload.kill()
            reload.wait()
    assert reload.returncode == 1
    assert "the compiler crashed: killed by signal SIGSEGV" in err
    assert sv.history()[-1]["outcome"] == "rejected"
    assert_still_serving(sv)


def test_workers_are_respawned_while_a_slow_compile_runs(sv: Serve) -> None:
    sv.start(sv.config("A"))
    big = sv.config("B", extra=routes(50000, anchored=True))
    reload = subprocess.Popen(
        [*CLI, "reload", str(big), "--timeout", "60", "--control", sv.control],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: compile_children(sv), 20, "a compile process")
        (old,) = workers_of(sv)
        kill_pid(old)

        def respawned() -> bool:
            w = sv.status()["workers"][0]
            return bool(w["pid"]) and w["pid"] != old and w["generation"] == 1

        wait_for(respawned, 20, "the killed worker to be replaced")
        # Replaced while the compile still runs: upkeep did not wait for it.
        assert compile_children(sv), "the compile finished before the respawn"
        assert reload.poll() is None
        out, err = reload.communicate(timeout=120)
    finally:
        if reload.poll() is None:
            reload.kill()
            reload.wait()
    assert reload.returncode == 0, err
    assert "accepted" in out
    assert get(sv.port, "/p49999/") == (200, b"x")
