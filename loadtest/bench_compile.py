"""Compile, artifact and lookup figures for route tables of 10 to 100k routes.

Owns: generating synthetic configurations (Python dicts → JSON text → ``compile_text``) and
timing each stage with the code pavis really runs: the compiler, ``artifact.seal``/``read``
(verify + decode) and ``pavis.lookup`` over the compiled index.
Must not: assert anything. It is a script that prints a table (docs/bench/compile.md), not a
test; speed is never asserted in the test suite.

Each table has one virtual host; its routes are, in declared order, a mix of exact paths
(``/e/<i>``, 45 %), prefixes (``/p/<i>/``, 50 %) and regexes (``^/re<i>/[0-9]+$``, 5 %), all
forwarding to one cluster. Lookups are timed for exact hits, prefix hits, regex hits and
misses, over requests spread across the whole table.

Two shapes of the same table: "fixed" zero-pads route numbers (every prefix and regex literal
has the same length at any size), "varied" does not (the number of distinct lengths grows with
the digits). A lookup that misses the exact table probes the key table (prefixes and regex
literals) from the longest distinct key length down and stops at the first hit, so the two
shapes separate the cost of table size from the cost of length diversity.

Run:  python loadtest/bench_compile.py [--sizes 10,1000,10000,100000] [--shapes fixed,varied]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import time
from collections.abc import Callable
from typing import Any

from pavis import artifact, lookup
from pavis.compiler import compile_text
from pavis.schema import Model

TARGET_DECODE_10K_MS = 30.0
TARGET_LOOKUP_RATIO = 2.0


def kind_of(i: int) -> str:
    if i % 20 == 9:  # one route in 20, and one in a table of 10
        return "regex"
    return "exact" if i % 2 == 0 else "prefix"


def ident(i: int, shape: str) -> str:
    """Route number as it appears in paths: zero-padded ("fixed") or as is ("varied")."""
    return f"{i:06d}" if shape == "fixed" else str(i)


def route(i: int, shape: str) -> dict[str, Any]:
    kind, k = kind_of(i), ident(i, shape)
    if kind == "regex":
        match: dict[str, Any] = {"regex": f"^/re{k}/[0-9]+$"}
    elif kind == "exact":
        match = {"exact": f"/e/{k}"}
    else:
        match = {"prefix": f"/p/{k}/"}
    return {"name": f"r{i}", "match": match, "forward": {"cluster": "api"}}


def config(n: int, shape: str) -> dict[str, Any]:
    return {
        "version": 1,
        "listeners": [{"name": "public", "address": "127.0.0.1:8080"}],
        "clusters": [{"name": "api", "endpoints": ["127.0.0.1:9001", "127.0.0.1:9002"]}],
        "virtual_hosts": [
            {
                "name": "bench",
                "domains": ["bench.example", "*"],
                "routes": [route(i, shape) for i in range(n)],
            }
        ],
    }


def requests_for(n: int, shape: str, kind: str, count: int, rng: random.Random) -> list[str]:
    """Paths that hit routes of ``kind`` (spread over the table), or miss everything."""
    if kind == "miss":
        return [f"/nothing/{rng.randrange(10**6)}" for _ in range(count)]
    ids = [i for i in range(n) if kind_of(i) == kind]
    if not ids:
        return []
    picks = [ident(rng.choice(ids), shape) for _ in range(count)]
    if kind == "exact":
        return [f"/e/{i}" for i in picks]
    if kind == "prefix":
        return [f"/p/{i}/items/{rng.randrange(1000)}" for i in picks]
    return [f"/re{i}/{rng.randrange(1000)}" for i in picks]


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """Fastest of ``repeat`` runs, in seconds (the least disturbed by the machine)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def lookup_ns(model: Model, paths: list[str], rounds: int) -> float:
    """Fastest over rounds of the mean time of host + route lookup per request, in ns."""
    domains, routes, vhosts = model.domains, model.routes, model.virtual_hosts
    headers: dict[str, str] = {}
    find_vhost, find_route = lookup.find_vhost, lookup.find_route
    per_round = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for path in paths:
            v = find_vhost(domains, "bench.example")
            find_route(routes, vhosts[v].index, "GET", path, headers)
        per_round.append((time.perf_counter_ns() - t0) / len(paths))
    return min(per_round)  # the least disturbed round, as timeit advises


def measure(n: int, shape: str, repeat: int) -> dict[str, Any]:
    text = json.dumps(config(n, shape))
    rounds = 1 if n >= 100_000 else repeat
    validated = None

    def do_compile() -> None:
        nonlocal validated
        validated = compile_text(text, "json", origin=f"<bench {n}>")

    compile_s = best_of(rounds, do_compile)
    assert validated is not None
    data = artifact.seal(validated)
    decode_s = best_of(repeat, lambda: artifact.read(data))
    _, model = artifact.read(data)
    index = model.virtual_hosts[0].index
    rng = random.Random(n)
    row: dict[str, Any] = {
        "routes": n,
        "compile_ms": compile_s * 1000,
        "artifact_bytes": len(data),
        "read_ms": decode_s * 1000,
        "probes": len(index.key_lengths),
    }
    for kind in ("exact", "prefix", "regex", "miss"):
        paths = requests_for(n, shape, kind, 2000, rng)
        # Every hit must be a hit, every miss a miss: the figures are about the right thing.
        v = lookup.find_vhost(model.domains, "bench.example")
        found = [
            lookup.find_route(model.routes, model.virtual_hosts[v].index, "GET", p, {})
            for p in paths
        ]
        assert all(r >= 0 for r in found) if kind != "miss" else all(r < 0 for r in found)
        row[f"{kind}_ns"] = lookup_ns(model, paths, 7) if paths else float("nan")
    del model
    gc.collect()
    return row


COLUMNS = (
    "routes",
    "probes",
    "compile_ms",
    "artifact_bytes",
    "read_ms",
    "exact_ns",
    "prefix_ns",
    "regex_ns",
    "miss_ns",
)


def run(shape: str, sizes: list[int], repeat: int) -> None:
    print(f"shape {shape}: route numbers {'zero-padded' if shape == 'fixed' else 'as is'}")
    print(" | ".join(f"{c:>14}" for c in COLUMNS))
    by_n = {}
    for n in sizes:
        row = by_n[n] = measure(n, shape, repeat)
        print(
            " | ".join(
                f"{row[c]:>14,.0f}"
                if c in ("routes", "probes", "artifact_bytes")
                else f"{row[c]:>14,.2f}"
                for c in COLUMNS
            ),
            flush=True,
        )
    if 10_000 in by_n:
        ms = by_n[10_000]["read_ms"]
        ok = ms < TARGET_DECODE_10K_MS
        print(
            f"target: read 10k routes < {TARGET_DECODE_10K_MS:.0f} ms: {ms:.1f} ms "
            f"{'OK' if ok else 'MISSED'}"
        )
    if 10 in by_n and 10_000 in by_n:
        for kind in ("exact", "prefix", "regex", "miss"):
            ratio = by_n[10_000][f"{kind}_ns"] / by_n[10][f"{kind}_ns"]
            ok = ratio <= TARGET_LOOKUP_RATIO
            print(
                f"target: {kind} lookup at 10k within {TARGET_LOOKUP_RATIO:.0f}x of 10: "
                f"{ratio:.2f}x {'OK' if ok else 'MISSED'}"
            )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,1000,10000,100000")
    parser.add_argument("--shapes", default="fixed,varied")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cpus; best of {args.repeat} "
        "for compile (1 at 100k) and read; lookup: fastest of 7 rounds of 2000 requests"
    )
    print(
        "read_ms = verify (header + xxh3-128) + decode; lookup_ns = find_vhost + find_route; "
        "probes = distinct key lengths (prefixes and regex literals): the most dict probes per lookup"
    )
    print()
    for shape in args.shapes.split(","):
        run(shape, sizes, args.repeat)


if __name__ == "__main__":
    main()
