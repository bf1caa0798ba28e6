"""The client side of the control protocol: one JSON request line, one JSON response line.

Owns: connecting to a supervisor's control socket and turning its answer into a result or a
``PavisError`` with the right exit code. Must not: print, or know what the operations do.

Protocol (docs/OPERATIONS.md): the client connects to the Unix stream socket, writes one
JSON object and a newline, and reads one JSON object and a newline. Every answer carries
``"ok"``; a refusal also carries ``"error"`` (a stable code), ``"reason"`` and ``"exit_code"``.
"""

from __future__ import annotations

import _socket
import errno
import os
import time

from pavis import wire
from pavis.errors import (
    EXIT_TIMEOUT,
    EXIT_USAGE,
    ControlError,
    PavisError,
    UnreachableError,
    UsageError,
    WaitTimeout,
)

TYPE_CHECKING = False  # not typing's: importing typing is ~10 ms of a 12 ms interpreter start
if TYPE_CHECKING:
    from typing import Any

MAX_LINE = 64 * 1024 * 1024
CONNECT_PATIENCE = 5.0  # seconds to retry a connect refused for a full backlog

# Connection failures that mean "no supervisor is there".
_UNREACHABLE = {errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK, errno.EACCES, errno.ECONNRESET}


def default_control_path(name: str = "default") -> str:
    """$PAVIS_CONTROL, else the systemd runtime directory, else /run/pavis/<name>.sock."""
    env = os.environ.get("PAVIS_CONTROL")
    if env:
        return env
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return os.path.join(runtime or "/run/pavis", f"{name}.sock")


def request(path: str, payload: dict[str, Any], timeout: float | None = 30.0) -> dict[str, Any]:
    """Send one request; return the answer if ``ok``, else raise the matching PavisError."""
    answer = exchange(path, payload, timeout)
    if answer.get("ok"):
        return answer
    raise refusal(answer)


def exchange(path: str, payload: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    """Send one request and return the raw answer, refusals included."""
    # _socket, not socket (whose enums and selectors cost a live command a quarter of its
    # CPU): a stream socket needs nothing of the wrapper.
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        _connect(sock, path, timeout)
        try:
            sock.sendall(wire.dumps(payload).encode() + b"\n")
            line = _read_line(sock)
        except TimeoutError:
            raise WaitTimeout(f"no answer from {path} within {timeout:g} s") from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise UnreachableError(f"supervisor on {path} hung up: {exc.strerror}") from None
    finally:
        sock.close()
    if not line:
        raise UnreachableError(f"supervisor on {path} closed the connection without answering")
    try:
        answer = wire.loads(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ControlError(f"unreadable answer from {path}: {line[:200]!r}") from None
    if not isinstance(answer, dict):
        raise ControlError(f"unreadable answer from {path}: {line[:200]!r}")
    return answer


def _connect(sock: _socket.socket, path: str, timeout: float | None) -> None:
    # EAGAIN: the listen backlog is full for now (a flood of clients); the supervisor sheds
    # them, so trying again shortly succeeds.
    deadline = time.monotonic() + min(timeout or CONNECT_PATIENCE, CONNECT_PATIENCE)
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise UnreachableError(
                    f"the supervisor on {path} accepts no connection (its backlog stays full)"
                ) from None
            time.sleep(0.05)
        except OSError as exc:
            if exc.errno in _UNREACHABLE:
                raise UnreachableError(f"no supervisor on {path}: {exc.strerror}") from None
            raise


def refusal(answer: dict[str, Any]) -> PavisError:
    reason = str(answer.get("reason") or answer.get("error") or "refused")
    code = answer.get("exit_code")
    if code == EXIT_TIMEOUT:
        return WaitTimeout(reason)
    if code == EXIT_USAGE:
        return UsageError(reason)
    return ControlError(reason)


def _read_line(sock: _socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        nl = chunk.find(b"\n")
        if nl >= 0:
            chunks.append(chunk[:nl])
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_LINE:
            raise ControlError("answer too long")
    return b"".join(chunks)
