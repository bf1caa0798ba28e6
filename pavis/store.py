"""The on-disk artifact store and reload history of one pavis instance (its state directory).

Owns: every accepted artifact kept under its checksum, the history of generations
(checksum, source, time, outcome), and the last-known-good pointer used at boot when no
config is given. Every write is atomic: temp file in the same directory, fsync, rename,
fsync of the directory — a crash leaves the old file or the new one, never a torn one.

Must not: compile, publish to shared memory or talk to workers. It verifies artifacts it
reads back (a corrupt file is an ``ArtifactError``, never a silent boot).

Layout::

    <state-dir>/artifacts/<checksum>.pvs   every artifact that was ever activated
    <state-dir>/last-known-good            one line: the checksum every worker last acked
    <state-dir>/history.json               JSON list of entries, newest last (bounded)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pavis.artifact import verify
from pavis.errors import ArtifactError, PavisError

log = logging.getLogger("pavis.store")

HISTORY_LIMIT = 1000
ARTIFACT_LIMIT = 64  # artifacts kept on disk; last-known-good and recent ones never pruned
_CHECKSUM = re.compile(r"^[0-9a-f]{32}$")
MIN_PREFIX = 10  # hex digits of a checksum prefix: shorter ones collide too easily

# Outcomes recorded in history (documented in docs/OPERATIONS.md).
ACCEPTED = "accepted"
REJECTED = "rejected"
TIMEOUT = "timeout"
UNCHANGED = "unchanged"


class StoreError(PavisError):
    """The state directory cannot be used (permissions, missing artifact, ...)."""

    code = "store_failed"


@dataclass(frozen=True)
class Entry:
    """One line of history: an attempt to make a generation current."""

    time: float  # unix time
    op: str  # boot | reload | rollback
    source: str  # config or artifact path, "rollback", "last-known-good", ...
    outcome: str  # accepted | rejected | timeout | unchanged
    generation: int  # 0 when nothing was published
    checksum: str  # "" when nothing could be sealed
    reason: str  # why it was rejected; "" when accepted
    boot: str  # identifies the supervisor run (generation numbers restart per run)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["time_iso"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time))
        return d


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new content."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """Artifacts, history and last-known-good of one instance. Thread-safe."""

    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir)
        self.artifacts = self.root / "artifacts"
        self._history_path = self.root / "history.json"
        self._lkg_path = self.root / "last-known-good"
        self._lock = threading.Lock()  # in-memory state
        self._write_lock = threading.Lock()  # disk writes, in order
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.artifacts.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"cannot create state dir {self.root}: {exc.strerror}") from None
        # Leftover temp files of a crash mid-write are garbage by construction.
        for d in (self.root, self.artifacts):
            for leftover in d.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        # History and last-known-good live in memory and are written through (flush); readers
        # never wait for the disk.
        self._entries = self._load_history()
        self._lkg = self._load_lkg()
        self._dirty_history = False
        self._dirty_lkg = False

    # ------------------------------------------------------------------ artifacts

    def path_of(self, checksum: str) -> Path:
        return self.artifacts / f"{checksum}.pvs"

    def put(self, data: bytes) -> str:
        """Verify and keep ``data`` under its checksum; returns the checksum."""
        checksum = verify(data).checksum
        path = self.path_of(checksum)
        if not path.exists():
            atomic_write(path, data)
        return checksum

    def get(self, checksum: str) -> bytes:
        """The stored artifact, verified. ``checksum`` may be a unique prefix (≥ MIN_PREFIX)."""
        full = self.resolve(checksum)
        try:
            data = self.path_of(full).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"no stored artifact {full}") from None
        header = verify(data)
        if header.checksum != full:
            raise ArtifactError(
                "checksum_mismatch", f"stored file {full}.pvs holds {header.checksum}"
            )
        return data

    def resolve(self, checksum: str) -> str:
        """Expand a checksum prefix to the one stored checksum it names."""
        checksum = checksum.lower()
        if _CHECKSUM.match(checksum):
            return checksum
        if len(checksum) < MIN_PREFIX or not re.fullmatch(r"[0-9a-f]+", checksum):
            raise StoreError(
                f"{checksum!r} is not a checksum: give its 32 hex digits, or a unique prefix "
                f"of at least {MIN_PREFIX}"
            )
        found = sorted(p.stem for p in self.artifacts.glob(f"{checksum}*.pvs"))
        if len(found) != 1:
            what = "no" if not found else "more than one"
            raise StoreError(f"{what} stored artifact matches {checksum!r}")
        return found[0]

    def newest_intact(self, skip: str = "") -> tuple[str, bytes] | None:
        """The most recently accepted stored artifact that verifies (other than ``skip``),
        else the newest-written one that does; None if none does. For a boot whose
        last-known-good is unusable."""
        with self._lock:
            order = [e.checksum for e in reversed(self._entries) if e.outcome == ACCEPTED]
        by_age = sorted(self.checksums(), key=lambda c: self._mtime(self.path_of(c)), reverse=True)
        seen: set[str] = {skip}
        for checksum in [*order, *by_age]:
            if not checksum or checksum in seen:
                continue
            seen.add(checksum)
            try:
                return checksum, self.get(checksum)
            except PavisError as exc:
                log.warning("stored artifact %s is unusable too: %s", checksum, exc)
        return None

    def source_of(self, checksum: str) -> str:
        """The config or artifact path ``checksum`` was last booted or reloaded from, if it
        is still a file ("" otherwise): what a reload without a path reads after a boot
        from last-known-good."""
        with self._lock:
            entries = list(reversed(self._entries))
        for e in entries:
            mine = e.checksum == checksum and e.op in ("boot", "reload") and e.outcome == ACCEPTED
            if mine and os.path.isabs(e.source) and os.path.isfile(e.source):
                return e.source
        return ""

    @staticmethod
    def _mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    def checksums(self) -> list[str]:
        return sorted(p.stem for p in self.artifacts.glob("*.pvs"))

    def prune(self, keep: int = ARTIFACT_LIMIT) -> list[str]:
        """Drop artifacts beyond the ``keep`` most recently used; never the last-known-good."""
        with self._lock:
            recent: list[str] = []
            for e in reversed(self._entries):
                if e.checksum and e.outcome in (ACCEPTED, UNCHANGED) and e.checksum not in recent:
                    recent.append(e.checksum)
            protect = set(recent[:keep])
            if self._lkg:
                protect.add(self._lkg)
            dropped = []
            for c in self.checksums():
                if c not in protect:
                    with contextlib.suppress(FileNotFoundError):
                        self.path_of(c).unlink()
                    dropped.append(c)
            return dropped

    # ------------------------------------------------------------------ last-known-good

    def last_known_good(self) -> str:
        """Checksum of the last artifact every worker acknowledged; "" if none yet."""
        with self._lock:
            return self._lkg

    def mark_good(self, checksum: str, flush: bool = True) -> None:
        if not self.path_of(checksum).exists():
            raise StoreError(f"cannot mark {checksum} good: it is not stored")
        with self._lock:
            if checksum != self._lkg:
                self._lkg = checksum
                self._dirty_lkg = True
        if flush:
            self.flush()

    def _load_lkg(self) -> str:
        try:
            text = self._lkg_path.read_text().strip()
        except FileNotFoundError:
            return ""
        return text if _CHECKSUM.match(text) else ""

    # ------------------------------------------------------------------ history

    def record(self, entry: Entry, flush: bool = True) -> None:
        """Append to the history; with ``flush=False`` it is visible at once, on disk at the
        next ``flush()`` (the supervisor answers a reload first and writes right after)."""
        with self._lock:
            self._entries.append(entry)
            del self._entries[:-HISTORY_LIMIT]
            self._dirty_history = True
        if flush:
            self.flush()

    def history(self) -> list[Entry]:
        with self._lock:
            return list(self._entries)

    def flush(self) -> None:
        """Write what changed, each file atomically, in the order the changes were made.

        Snapshots are taken under the write lock, so a slow fsync never lets an older state
        overwrite a newer one, and never blocks readers or ``record()`` (they take only
        ``_lock``, which is not held while writing).
        """
        with self._write_lock:
            with self._lock:
                lkg = self._lkg if self._dirty_lkg else None
                entries = list(self._entries) if self._dirty_history else None
                self._dirty_lkg = self._dirty_history = False
            if lkg is not None:
                atomic_write(self._lkg_path, f"{lkg}\n".encode())
            if entries is not None:
                body = json.dumps([e.to_json() for e in entries], indent=0)
                atomic_write(self._history_path, body.encode() + b"\n")

    def _load_history(self) -> list[Entry]:
        try:
            raw = json.loads(self._history_path.read_bytes())
            fields = Entry.__dataclass_fields__
            return [Entry(**{k: v for k, v in item.items() if k in fields}) for item in raw]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError, AttributeError) as exc:
            # Atomic writes rule out a torn file; this is outside tampering. Keep the evidence,
            # start a new history: a history problem must never stop the proxy from booting.
            bad = self._history_path.with_name(f"history.json.bad-{int(time.time())}")
            with contextlib.suppress(OSError):
                self._history_path.rename(bad)
            log.error("%s is unreadable (%s); moved to %s", self._history_path, exc, bad.name)
            return []
