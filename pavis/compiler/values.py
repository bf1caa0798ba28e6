"""Value syntaxes of a config, converted while the problems they have are collected.

Owns: ``Values`` — durations into milliseconds, sizes into bytes, ``host:port`` into (host,
port), status codes and classes into sorted codes, PEM files into embedded text — and the
problem list every later conversion step adds to. Must not: raise on a bad value (it is a
problem, and a placeholder stands in for it) or decide anything beyond the value itself.
"""

from __future__ import annotations

import re
from pathlib import Path

from pavis.compiler import units
from pavis.errors import Problem

STATUS_CLASS = re.compile(r"[1-5]xx")


class Values:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir  # relative PEM files are read from here
        self.problems: list[Problem] = []

    def add(self, path: str, constraint: str, message: str) -> None:
        self.problems.append(Problem(path, constraint, message))

    def duration(self, text: str, path: str, *, allow_zero: bool = False) -> int:
        ms = units.duration_ms(text)
        if isinstance(ms, str):
            self.add(path, "invalid_duration", ms)
            return 1
        if ms == 0 and not allow_zero:
            self.add(path, "invalid_duration", "must be longer than 0")
            return 1
        return ms

    def size(self, value: int | str, path: str) -> int:
        n = units.size_bytes(value)
        if isinstance(n, str):
            self.add(path, "invalid_size", n)
            return 0
        return n

    def address(self, text: str, path: str) -> tuple[str, int]:
        got = units.split_address(text)
        if isinstance(got, str):
            self.add(path, "invalid_address", got)
            return text, 1  # a placeholder port that draws no second (invalid_port) problem
        return got

    def pem(self, file: str, path: str) -> str:
        p = Path(file)
        if not p.is_absolute():
            p = self.base_dir / p
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            self.add(path, "unreadable_file", f"cannot read {file!r}: {reason}")
            return ""
        if not text.strip():  # "" stands for an unreadable file from here on
            self.add(path, "invalid_pem", f"{file!r} is empty")
        return text

    def statuses(self, items: list[int | str], path: str, first: int = 0) -> tuple[int, ...]:
        """Status codes or classes ("5xx") → sorted unique codes."""
        out: set[int] = set()
        for k, item in enumerate(items, first):
            if isinstance(item, int) or (item.isascii() and item.isdigit()):  # not "¹"
                code = int(item)
                if not 100 <= code <= 599:
                    self.add(f"{path}[{k}]", "invalid_status", f"{item!r} is not an HTTP status")
                out.add(code)
            elif STATUS_CLASS.fullmatch(item):
                base = int(item[0]) * 100
                out.update(range(base, base + 100))
            else:
                self.add(f"{path}[{k}]", "invalid_status", f"{item!r} is not a status or 'Nxx'")
        return tuple(sorted(out))
