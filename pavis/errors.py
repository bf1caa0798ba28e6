"""The one exception hierarchy of pavis.

Owns: every error class, its stable ``code`` and its process ``exit_code``.
Must not: import anything but the stdlib. Callers map errors to behaviour through the
attributes (``code``, ``exit_code``), never through isinstance ladders.

Exit codes (docs/OPERATIONS.md): 0 ok · 1 rejected or invalid · 2 usage · 3 supervisor unreachable ·
4 timed out waiting for workers. A worker process exits 70 when it cannot boot (cannot attach, no
generation) and 71 when the artifact is unusable (docs/INTERFACES.md); the supervisor halts
instead of restarting a slot that keeps exiting with either.
"""

from __future__ import annotations

from collections import namedtuple

TYPE_CHECKING = False  # not typing's: importing typing costs a live `pavctl` command ~10 ms
if TYPE_CHECKING:
    from typing import NamedTuple

    class _Problem(NamedTuple):
        path: str
        constraint: str
        message: str

else:
    _Problem = namedtuple("_Problem", ("path", "constraint", "message"))

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4
EXIT_BOOT_FAILED = 70  # a worker could not boot
EXIT_ARTIFACT_UNUSABLE = 71  # a worker found the artifact unusable


class PavisError(Exception):
    """Base of every error pavis raises on purpose."""

    code = "pavis_error"
    exit_code = EXIT_REJECTED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Problem(_Problem):
    """One compile-time finding: where (a JSONPath-like field path), which rule, and why.

    A named tuple, not a dataclass: frozen, ordered and hashable alike, and importing
    ``dataclasses`` (with ``inspect``) would cost every ``pavctl`` command ~12 ms; made with
    ``collections.namedtuple`` (typed as a NamedTuple) because ``typing`` costs ~10 ms."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"{self.path}: {self.message} ({self.constraint})"


class ConfigError(PavisError):
    """A configuration was rejected. Carries every problem found, not just the first."""

    code = "config_invalid"
    exit_code = EXIT_REJECTED

    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = sorted(problems, key=_problem_order)
        self.source = source
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{head}{len(self.problems)} problem(s)\n{lines}")


def _problem_order(p: Problem) -> tuple[str, str, str]:
    return (p.path, p.constraint, p.message)


class IngestError(PavisError):
    """The configuration source could not be read or parsed (I/O, syntax, extension)."""

    code = "ingest_failed"
    exit_code = EXIT_REJECTED


class ArtifactError(PavisError):
    """A `.pvs` artifact (or a shm segment holding one) was rejected as a whole.

    ``reason`` is a stable identifier: ``truncated``, ``bad_magic``, ``unsupported_version``,
    ``bad_algorithm``, ``reserved_nonzero``, ``length_mismatch``, ``checksum_mismatch``,
    ``decode_failed``, ``flags_unknown``.
    """

    code = "artifact_invalid"
    exit_code = EXIT_REJECTED

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"artifact rejected: {detail} ({reason})")


class ControlError(PavisError):
    """The supervisor answered a control request with a refusal."""

    code = "control_rejected"
    exit_code = EXIT_REJECTED


class UnreachableError(PavisError):
    """No supervisor answered on the control socket."""

    code = "supervisor_unreachable"
    exit_code = EXIT_UNREACHABLE


class WaitTimeout(PavisError):
    """Workers did not all acknowledge a generation in time."""

    code = "wait_timeout"
    exit_code = EXIT_TIMEOUT


class UsageError(PavisError):
    """The command line itself is wrong."""

    code = "usage"
    exit_code = EXIT_USAGE


class CompileMemory(PavisError):
    """Compiling a config needed more memory than the compile process may use."""

    code = "compile_memory"
    exit_code = EXIT_REJECTED


class CompileTimeout(PavisError):
    """Compiling a config took longer than the compile time limit."""

    code = "compile_timeout"
    exit_code = EXIT_REJECTED


class CompileCrashed(PavisError):
    """The compile process died (by a signal) or failed without a verdict on the config."""

    code = "compile_crashed"
    exit_code = EXIT_REJECTED


class FleetError(PavisError):
    """A fleet operation through etcd failed.

    ``reason`` is a stable identifier (``etcd_unreachable``, ``publish_conflict``, ``malformed``,
    ``not_found``, ``chunk_checksum_mismatch``, an artifact rejection reason, ...); unreachable
    etcd exits 3, everything else 1.
    """

    code = "fleet_failed"
    exit_code = EXIT_REJECTED

    def __init__(self, reason: str, message: str, exit_code: int = EXIT_REJECTED) -> None:
        self.reason = reason
        self.exit_code = exit_code
        super().__init__(f"{message} ({reason})")
