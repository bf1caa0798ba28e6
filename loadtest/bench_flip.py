"""Flip latency (publish → every worker acknowledged), idle CPU and private memory of workers.

Owns: a supervisor loop over ``shm.Publisher`` and forked worker processes that do on each flip
what a pavis worker does — open the segment through ``shm.Subscriber``, verify and decode the
artifact, build state, switch, acknowledge — in one of several strategies, so that their costs
can be compared:

- ``shm``        open + segment checksum + ack; no artifact work (the floor shm itself sets)
- ``eager``      ``artifact.read`` (verify + decode every route), swap, ack — the old table is
                 freed by the swap, i.e. *before* the ack (the naive worker)
- ``eager-late`` as ``eager`` but the old table is dropped only after the ack
- ``lazy``       ``artifact.verify`` + decode with a mirror Model whose routes stay
                 ``msgspec.Raw`` (views into the read-only mapping, decoded on first use), ack,
                 then free the old generation
- ``lazy-copy``  as ``lazy`` but from a private ``bytes`` copy, the segment closed at once
- ``runtime``    the worker runtime's own code: ``workers.state.load`` + ``State`` + Registry

Default: shm, eager, lazy, runtime (``--variants`` selects others). Workers wait cooperatively
with gevent's select on the notify descriptor plus a 200 ms poll, as the real runtime does.
Between flips the supervisor pauses long enough for workers to finish freeing, so each sample
is one flip on an otherwise quiet system (reloads are rare); the 1-minute load average printed
with each row says how quiet the box really was.
Must not: assert anything. It prints figures (docs/bench/flip.md); tests never time things.

Run:  python -m loadtest.bench_flip [--sizes 10,1000,10000,100000] [--workers 2,4]
                                    [--variants shm,eager,lazy,runtime] [--idle 10] [--json]
      python -m loadtest.bench_flip --breakdown          # in-process cost of each step
On a shared machine prefix ``chrt -f 10`` (SCHED_FIFO, inherited by the workers) to approximate
a quiet one; docs/bench/flip.md explains.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import traceback
import uuid
from typing import Any

from loadtest import bench_compile, procstat
from pavis import artifact
from pavis.compiler import compile_text
from shm import Publisher, Segment, ShmError, Subscriber
from tests.helpers import kill_and_reap

VARIANTS = ("shm", "eager", "eager-late", "lazy", "lazy-copy", "runtime")
DEFAULT_VARIANTS = ("shm", "eager", "lazy", "runtime")
FLIPS = {10: 100, 1000: 100, 10_000: 100, 100_000: 10}
ACK_TIMEOUT_S = 120
POLL_S = 0.2


# ------------------------------------------------------------------ lazy decoding


def load_lazy(data: memoryview) -> tuple[artifact.Header, artifact.LazyModel, artifact.LazyRoutes]:
    """The worker runtime's lazy reader (``pavis.artifact.read_lazy``) plus its route view."""
    header, model = artifact.read_lazy(data)
    return header, model, artifact.LazyRoutes(model.routes)


# ------------------------------------------------------------------ the worker


def build(variant: str, seg: Segment, generation: int, registry: Any) -> tuple[bytes, Any, Any]:
    """(digest to ack, new state, segment to keep mapped or None)."""
    if variant == "shm":
        return seg.digest, None, seg
    if variant in ("eager", "eager-late"):
        header, model = artifact.read(seg.data)
        state = (model, {c.name: c for c in model.clusters})
        seg.close()  # a full decode copies everything: the mapping is no longer needed
        return header.digest, state, None
    if variant == "runtime":
        from workers.state import State, load

        copied = bytes(seg.data)
        seg.close()
        rheader, rmodel = load(copied)
        return rheader.digest, State(generation, rheader, rmodel, registry), None
    if variant == "lazy-copy":
        view = memoryview(bytes(seg.data))
        seg.close()
        header, lazy, routes = load_lazy(view)
        return header.digest, (lazy, routes, {c.name: c for c in lazy.clusters}), None
    header, lazy, routes = load_lazy(seg.data)
    return header.digest, (lazy, routes, {c.name: c for c in lazy.clusters}), seg


def worker(name: str, slot: int, notify_fd: int, variant: str) -> None:
    from gevent import select as gselect  # after fork

    registry = None
    if variant == "runtime":
        from workers.state import Registry

        registry = Registry()
    sub = Subscriber(name, slot, notify_fd)
    served = 0
    state: Any = None
    seg: Segment | None = None
    while True:
        gselect.select([notify_fd], [], [], POLL_S)
        sub.clear()
        generation = sub.current()
        if not generation or generation == served:
            continue
        try:
            new_seg = sub.open(generation)
            digest, new_state, keep = build(variant, new_seg, generation, registry)
        except Exception as exc:  # a benchmark worker reports anything, the run shows it
            sub.reject(generation, f"{type(exc).__name__}: {exc}")
            served = generation
            continue
        if variant == "eager":
            state, seg_old = new_state, seg  # the swap frees the old table right here
            seg = keep
            sub.ack(generation, digest)
        else:
            old_state, seg_old = state, seg
            state, seg = new_state, keep
            sub.ack(generation, digest)
            if registry is not None:
                registry.keep_only(state)
            del old_state  # freed after the ack: off the flip's critical path
        if seg_old is not None:
            seg_old.close()
        served = generation


def fork_worker(name: str, slot: int, notify_fd: int, variant: str) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            worker(name, slot, notify_fd, variant)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


# ------------------------------------------------------------------ the supervisor loop


def cpu_ns(pid: int) -> int:
    """Time ``pid`` spent on a CPU, in ns (/proc/PID/schedstat: finer than utime+stime ticks)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(
    data: bytes, routes: int, workers: int, variant: str, flips: int, idle_s: float
) -> dict[str, Any]:
    name = f"bench{os.getpid()}x{uuid.uuid4().hex[:8]}"
    pub = Publisher(name, slots=workers)
    pids: list[int] = []
    try:
        first = pub.publish(data)
        pub.activate(first)
        for slot in range(workers):
            pids.append(fork_worker(name, slot, pub.open_slot(slot), variant))
        pub.wait_acked(first, ACK_TIMEOUT_S)
        samples: list[float] = []
        # CPU the workers spend per flip (build + free) barely depends on other load on the box,
        # unlike wall-clock latency: it is the robust figure when the machine is shared.
        cpu_before = sum(cpu_ns(p) for p in pids)
        for _ in range(flips):
            # Let workers finish freeing the previous table: each sample is a flip on a quiet box.
            time.sleep(0.02 + 1.2 * (samples[-1] if samples else 0.05))
            t0 = time.perf_counter()
            generation = pub.publish(data)
            pub.activate(generation)
            pub.wait_acked(generation, ACK_TIMEOUT_S)
            samples.append(time.perf_counter() - t0)
            pub.collect()
        time.sleep(0.2 + 2 * samples[-1])
        cpu_per_flip_ms = (sum(cpu_ns(p) for p in pids) - cpu_before) / 1e6 / flips / workers
        private = [procstat.private_bytes(p) for p in pids]
        rss = [procstat.rss_bytes(p) for p in pids]
        idle: list[float] = []
        idle_ticks: list[float] = []
        if idle_s:
            before = [cpu_ns(p) for p in pids]
            ticks = [procstat.cpu_seconds(p) for p in pids]
            time.sleep(idle_s)
            idle = [(cpu_ns(p) - b) / 1e7 / idle_s for p, b in zip(pids, before, strict=True)]
            idle_ticks = [
                (procstat.cpu_seconds(p) - t) * 100 / idle_s
                for p, t in zip(pids, ticks, strict=True)
            ]
        return {
            "routes": routes,
            "artifact_bytes": len(data),
            "workers": workers,
            "variant": variant,
            "flips": flips,
            "median_ms": statistics.median(samples) * 1000,
            "worker_cpu_per_flip_ms": cpu_per_flip_ms,
            "p99_ms": pct(samples, 0.99) * 1000,
            "max_ms": max(samples) * 1000,
            "private_mb": statistics.median(private) / 2**20,
            "rss_mb": statistics.median(rss) / 2**20,
            "idle_cpu_pct": max(idle) if idle else None,  # schedstat, worst worker
            "idle_cpu_ticks_pct": max(idle_ticks) if idle else None,  # utime+stime, worst worker
            # Other work on the box shows up in p99: print the 1-minute load with every row.
            "loadavg": os.getloadavg()[0],
        }
    finally:
        kill_and_reap(pids)
        pub.close()


def config(n: int) -> dict[str, Any]:
    """One virtual host of ``n`` routes: exact paths 45 %, prefixes 50 %, regexes 5 % — the
    table of loadtest/bench_compile.py (its "varied" shape), so the two benchmarks agree."""
    return bench_compile.config(n, "varied")


def artifact_of(routes: int) -> bytes:
    validated = compile_text(json.dumps(config(routes)), "json", origin=f"<bench {routes}>")
    return artifact.seal(validated)


def breakdown(data: bytes, repeat: int = 7) -> dict[str, float]:
    """In one process, no contention: where a flip's worker time goes (best of ``repeat``, ms)."""

    def best(fn: Any) -> float:
        times = []
        for _ in range(repeat):
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times) * 1000

    view = memoryview(data)
    out = {
        "copy_ms": best(lambda: bytes(view)),
        "verify_ms": best(lambda: artifact.verify(view)),
        "eager_decode_ms": best(lambda: artifact.read(view)),
        "lazy_decode_ms": best(lambda: load_lazy(view)),
    }
    for name, make in (("eager", lambda: artifact.read(view)), ("lazy", lambda: load_lazy(view))):
        frees = []
        for _ in range(repeat):
            held = [make()]
            t0 = time.perf_counter()
            held.clear()  # drops the last reference: the whole table is freed here
            frees.append(time.perf_counter() - t0)
        out[f"{name}_free_ms"] = min(frees) * 1000
    _, _, routes = load_lazy(view)
    t0 = time.perf_counter()
    for i in range(min(len(routes), 1000)):
        routes[i]
    out["route_first_use_us"] = (time.perf_counter() - t0) / min(len(routes), 1000) * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,1000,10000,100000")
    parser.add_argument("--workers", default="2,4")
    parser.add_argument(
        "--variants", default=",".join(DEFAULT_VARIANTS), help=f"of {','.join(VARIANTS)}"
    )
    parser.add_argument("--flips", type=int, default=0, help="per run (default: by size)")
    parser.add_argument(
        "--idle",
        type=float,
        default=10.0,
        help="seconds of idle CPU measurement (lazy, 2 workers, largest size)",
    )
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines too")
    parser.add_argument(
        "--breakdown", action="store_true", help="only time the worker's steps in-process"
    )
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.breakdown:
        for routes in sizes:
            row = {"routes": routes, **breakdown(artifact_of(routes))}
            print(
                "  ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                ),
                flush=True,
            )
        return
    counts = [int(x) for x in args.workers.split(",")]
    variants = args.variants.split(",")
    print(f"# {os.cpu_count()} cpus, python {sys.version.split()[0]}", flush=True)
    print(
        f"{'routes':>7} {'bytes':>9} {'wk':>2} {'variant':<10} {'flips':>5} {'median':>8} "
        f"{'p99':>8} {'max':>8} {'private':>8} {'rss':>7} {'cpu/flip':>8} {'load':>5} {'idle cpu':>8}",
        flush=True,
    )
    for routes in sizes:
        data = artifact_of(routes)
        gc.collect()
        for workers in counts:
            for variant in variants:
                idle = (
                    args.idle
                    if (workers == counts[0] and variant == variants[-1] and routes == sizes[-1])
                    else 0.0
                )
                try:
                    row = run(
                        data, routes, workers, variant, args.flips or FLIPS.get(routes, 50), idle
                    )
                except ShmError as exc:  # e.g. WorkerRejected: say so and go on with the rest
                    print(f"{routes:>7} {len(data):>9} {workers:>2} {variant:<10} failed: {exc}")
                    continue
                cpu = "" if row["idle_cpu_pct"] is None else f"{row['idle_cpu_pct']:.4f}%"
                print(
                    f"{routes:>7} {len(data):>9} {workers:>2} {variant:<10} {row['flips']:>5} "
                    f"{row['median_ms']:>6.1f}ms {row['p99_ms']:>6.1f}ms {row['max_ms']:>6.1f}ms "
                    f"{row['private_mb']:>6.1f}MB {row['rss_mb']:>5.1f}MB {row['worker_cpu_per_flip_ms']:>6.1f}ms "
                    f"{row['loadavg']:>5.2f} {cpu:>8}",
                    flush=True,
                )
                if args.json:
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
