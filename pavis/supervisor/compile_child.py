"""Compiling a config in a short-lived child process, under a memory and a time limit.

Owns: forking the child (``multiprocess``, fork start method, one ``Process`` and one
``Pipe``), its limits (address space via ``RLIMIT_AS``, wall time; both overridable through
the environment, see docs/OPERATIONS.md), carrying the sealed artifact back, and turning how
the child ended into a ``PavisError`` with a stable code. A config that exhausts memory, runs
too long or crashes the compiler costs one child; the supervisor keeps serving.
Must not: publish, store or flip anything, touch the supervisor's state, or log from the
child (it only compiles and answers).
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import signal
from typing import Any

from pavis.errors import CompileCrashed, CompileMemory, CompileTimeout, PavisError

COMPILE_MEMORY_MB = 2048  # address space a compile may add to what the supervisor maps
COMPILE_TIMEOUT_S = 60.0
MEMORY_ENV = "PAVIS_COMPILE_MEMORY_MB"
TIMEOUT_ENV = "PAVIS_COMPILE_TIMEOUT_S"

_MEMORY_EXIT = 86  # the child's exit status after a MemoryError (it cannot always answer)
# First byte of the child's answer.
_SEALED, _SEALED_READS_FILES, _REJECTED, _FAILED = b"S", b"F", b"R", b"X"
# Handlers the supervisor installs; the child must die of these like any process would,
# and must not write them to the supervisor's wakeup pipe.
_SIGNALS = (
    signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD,
    signal.SIGUSR1, signal.SIGUSR2,
)  # fmt: skip


def limits() -> tuple[int, float]:
    """(memory in MiB, timeout in seconds), from the environment or the defaults."""
    return (
        int(_number(MEMORY_ENV, COMPILE_MEMORY_MB)),
        _number(TIMEOUT_ENV, COMPILE_TIMEOUT_S),
    )


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise PavisError(f"{name}={raw!r}: expected a positive number")
    return value


def compile_config(data: bytes, path: str) -> tuple[bytes, bool]:
    """Compile and seal the config ``data`` read from ``path`` in a child process.

    Returns (artifact bytes, whether the compile read other files — TLS PEM files — whose
    content the artifact embeds). The child decoded the bytes back whole before answering
    (an artifact that would not decode is refused there, with ``read``'s reason), so the
    supervisor needs to decode only their head. Raises the compiler's own error for an
    invalid config, and ``CompileMemory``, ``CompileTimeout`` or ``CompileCrashed`` when the
    child failed.
    """
    memory_mb, timeout = limits()
    # Imported here, once: every child then starts with the compiler loaded.
    import multiprocess  # type: ignore[import-untyped]

    import pavis.compiler  # noqa: F401

    ctx = multiprocess.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child, args=(sender, data, path, memory_mb), name="pavis-compile", daemon=True
    )
    try:
        proc.start()
    except OSError as exc:
        receiver.close()
        sender.close()
        raise CompileCrashed(f"cannot start the compile process: {exc.strerror}") from None
    sender.close()
    try:
        answer = _receive(receiver, proc, timeout)
    finally:
        receiver.close()
        _reap(proc)
    return _result(answer, proc.exitcode, memory_mb, timeout)


def _receive(receiver: Any, proc: Any, timeout: float) -> bytes:
    if not receiver.poll(timeout):
        _kill(proc.pid)
        raise CompileTimeout(f"compiling took longer than {timeout:g} s ({TIMEOUT_ENV}): stopped")
    try:
        return bytes(receiver.recv_bytes())
    except (EOFError, OSError):
        return b""  # the child ended without answering; its exit status says why


def _kill(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _reap(proc: Any) -> None:
    proc.join(5.0)
    if proc.exitcode is None:  # answered, then hung on the way out
        _kill(proc.pid)
        proc.join()


def _result(
    answer: bytes, exitcode: int | None, memory_mb: int, timeout: float
) -> tuple[bytes, bool]:
    kind, body = answer[:1], answer[1:]
    if kind in (_SEALED, _SEALED_READS_FILES):
        return body, kind == _SEALED_READS_FILES
    if kind == _REJECTED:
        raise PavisError(body.decode(errors="replace"))
    if kind == _FAILED:
        raise CompileCrashed(f"the compiler failed: {body.decode(errors='replace')}")
    if exitcode == _MEMORY_EXIT:
        raise CompileMemory(
            f"compiling needed more than {memory_mb} MiB of memory ({MEMORY_ENV}): stopped"
        )
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else ""
        raise CompileCrashed(f"the compiler crashed: killed by signal {name or -exitcode}")
    raise CompileCrashed(f"the compile process exited with status {exitcode} without answering")


# ---------------------------------------------------------------------------------- child


def _child(sender: Any, data: bytes, path: str, memory_mb: int) -> None:
    # It exits once it answered: a collection would only walk the supervisor's objects and
    # the compile's (acyclic) graph again, and touch pages the fork shares with its parent.
    gc.disable()
    signal.set_wakeup_fd(-1)
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    # Headroom above what is mapped at fork (the supervisor's own code, threads, shm
    # segments), so the bound means the same whatever the supervisor holds.
    with open("/proc/self/statm", "rb") as f:
        mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        from pavis.artifact import read, seal
        from pavis.compiler import compile_text
        from pavis.compiler.ingest import syntax_of

        validated = compile_text(data, syntax_of(path), origin=path)
        sealed = seal(validated)
        read(sealed)  # what the workers will decode: here, where its memory goes away
        kind = _SEALED_READS_FILES if _reads_files(validated.model) else _SEALED
        sender.send_bytes(kind + sealed)
    except MemoryError:
        os._exit(_MEMORY_EXIT)
    except PavisError as exc:
        sender.send_bytes(_REJECTED + str(exc).encode())
    except Exception as exc:  # a compiler bug: reported, not raised into the supervisor
        sender.send_bytes(_FAILED + f"{type(exc).__name__}: {exc}".encode())
    sender.close()


def _reads_files(model: Any) -> bool:
    """Whether the artifact embeds files other than the config (TLS PEM files)."""
    from pavis.schema import ServerTls, UpstreamTls

    return any(isinstance(x.tls, ServerTls) for x in model.listeners) or any(
        isinstance(c.tls, UpstreamTls) and (c.tls.ca_pem or c.tls.cert_pem) for c in model.clusters
    )
