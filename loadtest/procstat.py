"""CPU time and memory of a process tree, read from /proc (Linux only).

Owns: finding a process's descendants, summing utime+stime over a tree, and private memory
per process from ``smaps_rollup``.
Must not: start, signal or wait for processes — callers own their processes.

The benchmarks divide a proxy's CPU seconds (its whole tree: master and workers) by the
requests it served, because wrk, the upstream and the proxy share the machine's cores and
requests/s alone describes the whole box, not the proxy (wrk, the upstream and the proxy
share the cores).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may contain spaces)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid ..." — comm ends at the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def parent_map() -> dict[int, int]:
    """pid → ppid for every process visible now."""
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is not None:
            out[int(name)] = int(fields[1])
    return out


def tree(root: int) -> list[int]:
    """``root`` and all its living descendants (root first); [] if root is gone."""
    parents = parent_map()
    if root not in parents:
        return []
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found = [root]
    i = 0
    while i < len(found):
        found.extend(sorted(children.get(found[i], ())))
        i += 1
    return found


def cpu_seconds(pid: int) -> float:
    """utime+stime of one process in seconds (0.0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After "pid (comm) ": state=0 ppid=1 ... utime=11 stime=12 (0-based).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    """utime+stime summed over ``root`` and its living descendants."""
    return sum(cpu_seconds(p) for p in tree(root))


def private_bytes(pid: int) -> int:
    """Private_Clean + Private_Dirty of a process in bytes (0 if unreadable)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size in bytes (0 if gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (FileNotFoundError, ProcessLookupError):
        return 0


@dataclass(frozen=True)
class TreeSample:
    """One look at a process tree."""

    pids: tuple[int, ...]
    cpu_s: float
    private: dict[int, int]  # pid → private bytes
    rss: dict[int, int]

    @property
    def count(self) -> int:
        return len(self.pids)

    @property
    def private_total(self) -> int:
        return sum(self.private.values())


def sample(root: int, memory: bool = True) -> TreeSample:
    """CPU and (optionally) memory of ``root``'s tree right now."""
    pids = tuple(tree(root))
    cpu = sum(cpu_seconds(p) for p in pids)
    priv = {p: private_bytes(p) for p in pids} if memory else {}
    rss = {p: rss_bytes(p) for p in pids} if memory else {}
    return TreeSample(pids, cpu, priv, rss)
