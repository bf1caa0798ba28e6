"""A thin client of one fleet's keys in etcd, over etcd's HTTP gateway (etcd3gw).

Owns: the endpoint list and fail-over (each request tries the endpoints in turn, starting with
the last one that answered, until one does or the deadline passes), reading and verifying
artifacts, and reading desired, host reports and history.
Must not: decide what to publish (``pavis.fleet.publish``), or trust anything read from etcd:
values go through ``pavis.fleet.layout`` decoders and artifacts through ``pavis.artifact``.
"""

from __future__ import annotations

import base64
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from etcd3gw import exceptions as etcd_exc
from etcd3gw.client import Etcd3Client

from pavis import artifact
from pavis.errors import EXIT_UNREACHABLE, ArtifactError, FleetError
from pavis.fleet import layout
from pavis.fleet.layout import Desired, HistoryEntry, HostReport, Keys, Manifest

_T = TypeVar("_T")
# Errors after which another endpoint may answer: the member is down, has no leader (503) or
# timed out. A request that was refused for what it is (400, 413, ...) is not retried.
_TRANSIENT = (etcd_exc.ConnectionFailedError, etcd_exc.ConnectionTimeoutError)


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(data: str) -> bytes:
    return base64.b64decode(data)


def prefix_end(prefix: str) -> str:
    """The range end that selects every key starting with ``prefix`` (ASCII prefixes only)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def parse_endpoints(value: str) -> list[tuple[str, int]]:
    """``http://h:p[,http://h:p...]`` (a bare ``h:p`` means http) → [(host, port)]."""
    out = []
    for raw in (v.strip() for v in value.split(",")):
        if not raw:
            continue
        url = urllib.parse.urlsplit(raw if "//" in raw else f"http://{raw}")
        if url.scheme != "http" or not url.hostname or url.path not in ("", "/"):
            raise FleetError("bad_endpoint", f"--etcd {raw!r}: expected http://HOST:PORT")
        try:
            port = url.port or 2379
        except ValueError:
            raise FleetError("bad_endpoint", f"--etcd {raw!r}: bad port") from None
        out.append((url.hostname, port))
    if not out:
        raise FleetError("bad_endpoint", "--etcd: no endpoint given (or set PAVIS_ETCD)")
    return out


@dataclass(frozen=True)
class Entry:
    """A value as read, with the revisions a guarded write compares against."""

    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int


class Store:
    """One fleet in an etcd cluster reached through any of several endpoints."""

    def __init__(
        self,
        endpoints: str,
        fleet: str,
        timeout: float = 5.0,
        deadline: float = 6.0,
        first: int = 0,
    ) -> None:
        """``first``: the endpoint tried first (modulo their count; hosts spread their load)."""
        self.endpoints = parse_endpoints(endpoints)
        self.keys = Keys(fleet)
        self.deadline = deadline
        self._clients = [
            Etcd3Client(host, port, api_path="/v3/", timeout=timeout)
            for host, port in self.endpoints
        ]
        self._current = first % len(self._clients)

    def close(self) -> None:
        for c in self._clients:
            c.session.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def urls(self) -> list[str]:
        return [f"http://{h}:{p}" for h, p in self.endpoints]

    # ----------------------------------------------------------------- transport

    def call(self, op: Callable[[Etcd3Client], _T]) -> _T:
        """Run ``op`` against the first endpoint that answers, retrying until the deadline."""
        end = time.monotonic() + self.deadline
        last: Exception | None = None
        while True:
            for i in range(len(self._clients)):
                index = (self._current + i) % len(self._clients)
                try:
                    result = op(self._clients[index])
                except _TRANSIENT as exc:
                    last = exc
                    continue
                except etcd_exc.Etcd3Exception as exc:
                    raise FleetError(
                        "etcd_refused", f"etcd at {self.urls[index]} refused the request: "
                        f"{exc.detail_text or exc}"
                    ) from None  # fmt: skip
                self._current = index
                return result
            if time.monotonic() >= end:
                break
            time.sleep(0.2)
        raise FleetError(
            "etcd_unreachable",
            f"no etcd endpoint answered within {self.deadline:g}s (tried {', '.join(self.urls)}): "
            f"{_describe(last)}",
            EXIT_UNREACHABLE,
        )

    def range(self, key: str, prefix: bool = False, **extra: Any) -> list[Entry]:
        body: dict[str, Any] = {"key": b64(key), **extra}
        if prefix:
            body["range_end"] = b64(prefix_end(key))

        def op(c: Etcd3Client) -> Any:
            return c.post(c.get_url("/kv/range"), json=body)

        return [entry_of(kv) for kv in self.call(op).get("kvs", [])]

    def range_at(self, key: str, range_end: str) -> tuple[list[Entry], int]:
        """Every key in ``[key, range_end)`` and the store revision the read saw."""
        body: dict[str, Any] = {"key": b64(key), "range_end": b64(range_end)}

        def op(c: Etcd3Client) -> Any:
            return c.post(c.get_url("/kv/range"), json=body)

        result = self.call(op)
        revision = int(result.get("header", {}).get("revision", 0))
        return [entry_of(kv) for kv in result.get("kvs", [])], revision

    def range_with_artifact(
        self, key: str, range_end: str, checksum: str
    ) -> tuple[list[Entry], int, list[Entry]]:
        """``range_at`` and every key of artifact ``checksum`` (for ``fetch``), in one request
        at one revision: a host that expects a new target reads it with its bytes."""
        prefix = self.keys.artifact(checksum)
        ranges = [
            {"request_range": {"key": b64(key), "range_end": b64(range_end)}},
            {"request_range": {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}},
        ]
        result = self.txn({"compare": [], "success": ranges})
        revision = int(result.get("header", {}).get("revision", 0))
        found = [
            [entry_of(kv) for kv in r.get("response_range", {}).get("kvs", [])]
            for r in result.get("responses", [])
        ]
        if len(found) != 2:
            raise FleetError("etcd_refused", "etcd answered a two-range transaction oddly")
        return found[0], revision, found[1]

    def keepalive(self, lease: int) -> int:
        """Renew ``lease``; its remaining TTL, 0 when etcd no longer knows it (expired)."""

        def op(c: Etcd3Client) -> Any:
            return c.post(c.get_url("/lease/keepalive"), json={"ID": lease})

        result = self.call(op)
        return int(result.get("result", {}).get("TTL", 0) or 0)

    def delete(self, key: str) -> None:
        def op(c: Etcd3Client) -> Any:
            return c.post(c.get_url("/kv/deleterange"), json={"key": b64(key)})

        self.call(op)

    def client(self) -> tuple[Etcd3Client, str]:
        """The endpoint that answered last (for a stream such as a watch), and its URL."""
        return self._clients[self._current], self.urls[self._current]

    def next_endpoint(self) -> None:
        """Start the next request with the next endpoint (the current one failed a stream)."""
        self._current = (self._current + 1) % len(self._clients)

    def get(self, key: str) -> Entry | None:
        found = self.range(key)
        return found[0] if found else None

    def put(self, key: str, value: bytes, lease: int = 0) -> None:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = lease

        def op(c: Etcd3Client) -> Any:
            return c.post(c.get_url("/kv/put"), json=body)

        self.call(op)

    def txn(self, txn: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.call(lambda c: dict(c.transaction(txn)))
        return result

    def grant(self, ttl: int) -> int:
        def op(c: Etcd3Client) -> int:
            return int(c.post(c.get_url("/lease/grant"), json={"TTL": ttl, "ID": 0})["ID"])

        return self.call(op)

    def revoke(self, lease: int) -> None:
        def op(c: Etcd3Client) -> Any:
            return c.post(c.get_url("/kv/lease/revoke"), json={"ID": lease})

        self.call(op)

    # ----------------------------------------------------------------- fleet values

    def desired(self) -> tuple[Desired, Entry] | None:
        """The desired pointer with the entry it was read from (for its mod_revision)."""
        entry = self.get(self.keys.desired)
        if entry is None:
            return None
        return layout.decode(Desired, entry.key, entry.value), entry

    def hosts(self) -> list[HostReport]:
        """Every live host report (a report vanishes with its host's lease)."""
        return self.hosts_at()[0]

    def hosts_at(self) -> tuple[list[HostReport], int]:
        """Every live host report and the store revision they were read at."""
        entries, revision = self.range_at(self.keys.hosts, prefix_end(self.keys.hosts))
        return [self.host_report(e) for e in entries], revision

    def host_report(self, e: Entry) -> HostReport:
        report = layout.decode(HostReport, e.key, e.value)
        if e.key != self.keys.hosts + report.host_id:
            raise FleetError(
                "malformed", f"etcd key {e.key}: report is for host {report.host_id!r}"
            )
        return report

    def history(self) -> list[HistoryEntry]:
        """Oldest first."""
        entries = self.range(self.keys.history, prefix=True, sort_order=1, sort_target=0)
        return [layout.decode(HistoryEntry, e.key, e.value) for e in entries]

    def manifest(self, checksum: str) -> Manifest | None:
        key = self.keys.manifest(checksum)
        entry = self.get(key)
        if entry is None:
            return None
        manifest = layout.decode(Manifest, key, entry.value)
        if manifest.checksum != checksum:
            raise FleetError("malformed", f"etcd key {key}: manifest is for {manifest.checksum}")
        return manifest

    def fetch(self, checksum: str, decode: bool = True, read: list[Entry] | None = None) -> bytes:
        """The sealed bytes of ``checksum``, reassembled and verified like a local artifact:
        every chunk against the manifest, the whole, the header and checksum, and (``decode``)
        a full decode. One request reads the manifest and every chunk, at one revision
        (none if ``read`` has them: the artifact's keys as ``range_with_artifact`` read them)."""
        if read is None:
            read = self.range(self.keys.artifact(checksum), prefix=True)
        found = {e.key: e for e in read}
        key = self.keys.manifest(checksum)
        entry = found.get(key)
        if entry is None:
            raise FleetError(
                "not_found", f"artifact {checksum} is not stored in fleet {self.keys.fleet}"
            )
        manifest = layout.decode(Manifest, key, entry.value)
        if manifest.checksum != checksum:
            raise FleetError("malformed", f"etcd key {key}: manifest is for {manifest.checksum}")
        chunks = []
        for n in range(manifest.chunks):
            chunk_key = self.keys.chunk(checksum, n)
            chunk = found.get(chunk_key)
            if chunk is None:
                raise FleetError(
                    "chunk_missing",
                    f"etcd key {chunk_key}: chunk {n} of {manifest.chunks} is missing",
                )
            chunks.append(layout.check_chunk(manifest, chunk_key, n, chunk.value))
        data = layout.join(manifest, key, chunks)
        verify(data, f"artifact {checksum} in etcd", checksum, decode)
        return data


def verify(
    data: bytes, what: str, checksum: str | None = None, decode: bool = True
) -> artifact.Header:
    """Verify sealed bytes exactly as a local reload does (size, header, checksum, and unless
    ``decode`` is false, a full decode: a host leaves that to its flip, which decodes anyway)."""
    try:
        header = artifact.read(data)[0] if decode else artifact.verify(data)
    except ArtifactError as exc:
        raise FleetError(exc.reason, f"{what}: {exc.message}") from None
    if checksum is not None and header.checksum != checksum:
        raise FleetError(
            "checksum_mismatch", f"{what}: the artifact's checksum is {header.checksum}"
        )
    return header


def entry_of(kv: dict[str, Any]) -> Entry:
    return Entry(
        key=unb64(kv["key"]).decode(errors="replace"),
        value=unb64(kv.get("value", "")),
        mod_revision=int(kv.get("mod_revision", 0)),
        create_revision=int(kv.get("create_revision", 0)),
        lease=int(kv.get("lease", 0)),
    )


def _describe(exc: Exception | None) -> str:
    if exc is None:
        return "no endpoint"
    text = getattr(exc, "detail_text", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


def put_report(store: Store, report: HostReport, lease: int) -> None:
    """Write a host's report under its lease (it disappears when the lease expires)."""
    store.put(store.keys.host(report.host_id), layout.encode(report), lease=lease)
