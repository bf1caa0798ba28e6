"""The sealed `.pvs` artifact: round trip, determinism, and rejection with a named reason.

Invariants checked here (docs/INTERFACES.md, the artifact format):
- seal → read gives back an equal Model; sealing twice gives identical bytes.
- Every named reason is reachable by a targeted corruption.
- Any mutation of a valid artifact (bit flip, truncation, extension, overwrite) is rejected
  with ArtifactError — never another exception, never a silent accept.
- The readable view of ``inspect --json`` converts back to an equal Model.

The model is built by hand so these tests do not depend on the compiler.
"""

from __future__ import annotations

import json
import struct

import msgspec
import pytest
import xxhash
from hypothesis import HealthCheck as HC
from hypothesis import given, settings
from hypothesis import strategies as st

from pavis import artifact
from pavis import schema as s
from pavis.artifact.view import from_view, to_view
from pavis.errors import ArtifactError

REASONS = {
    "truncated",
    "bad_magic",
    "unsupported_version",
    "flags_unknown",
    "bad_algorithm",
    "reserved_nonzero",
    "length_mismatch",
    "checksum_mismatch",
    "decode_failed",
}


def hand_model() -> s.Model:
    """A small but complete model: every tagged union in both variants somewhere."""
    no_ops = s.HeaderOps(remove=(), set=(), add=())
    pool = s.Pool(
        max_connections=128, max_idle=32, idle_timeout_ms=60000, max_pending=0, surplus_timeout_ms=1000
    )
    api = s.Cluster(
        name="api",
        endpoints=(s.Endpoint("127.0.0.1", 9001, 1), s.Endpoint("127.0.0.1", 9002, 2)),
        lb="round_robin",
        schedule=(1, 0, 1),
        connect_timeout_ms=1000,
        pool=pool,
        health_check=s.HealthCheck("/healthz", "api.internal", 2000, 1000, 2, 1, (200,)),
        outlier=s.Outlier(5, 10000),
        tls=s.TlsOff(),
    )
    canary = s.Cluster(
        name="api-canary",
        endpoints=(s.Endpoint("::1", 9003, 1),),
        lb="random",
        schedule=(0,),
        connect_timeout_ms=1000,
        pool=pool,
        health_check=s.HealthCheckOff(),
        outlier=s.OutlierOff(),
        tls=s.UpstreamTls("api.internal", True, "", "", ""),
    )
    forward = s.Forward(
        clusters=(s.WeightedCluster(0, "api", 90), s.WeightedCluster(1, "api-canary", 10)),
        cumulative_weights=(90, 100),
        rewrite=s.Rewrite(True, "/", 4, True, "api.internal"),
        timeout_ms=5000,
        retry=s.Retry(3, True, True, False, (503,), 1000, 25, 250, False),
        upgrades=("websocket",),
    )
    routes = (
        s.Route(
            "health",
            0,
            s.Match("exact", "/healthz", (), (), ()),
            s.Direct(200, b"ok\n", "text/plain"),
            no_ops,
            no_ops,
            s.RateLimitOff(),
        ),
        s.Route(
            "v1",
            0,
            s.Match(
                "prefix", "/v1/", ("GET", "HEAD"), (s.HeaderMatch("x-canary", "exact", "1"),), ()
            ),
            forward,
            s.HeaderOps(("cookie",), (("x-env", "prod"),), ()),
            s.HeaderOps(("server",), (), (("via", "pavis"),)),
            s.RateLimit(
                bytes(range(16)), "10/s", 100_000_000, 20, "header", "x-api-key", False, False,
                '"route";q=20;w=2',
            ),
        ),
        s.Route(
            "legacy",
            0,
            s.Match("regex", "^/old/[0-9]+$", (), (), ()),
            s.Redirect(301, "https://example.com/new"),
            no_ops,
            no_ops,
            s.RateLimitOff(),
        ),
        s.Route(
            "bin",
            1,
            s.Match("prefix", "/", (), (), ()),
            s.Direct(200, b"\xff\x00binary", "application/octet-stream"),
            no_ops,
            no_ops,
            s.RateLimitOff(),
        ),
        s.Route(
            "slow",
            1,
            s.Match("exact", "/slow", (), (), ()),
            s.Forward(
                (s.WeightedCluster(0, "api", 1),),
                (1,),
                s.Rewrite(False, "", 0, False, ""),
                1000,
                s.RetryOff(1, 1000),
                (),
            ),
            no_ops,
            no_ops,
            s.RateLimitOff(),
        ),
    )
    api_index = s.RouteIndex(
        exact={"/healthz": (0,)},
        keys={"": (2,), "/v1/": (1, 2)},
        key_lengths=(4, 0),
    )
    other_index = s.RouteIndex(
        exact={"/slow": (3, 4)},
        keys={"/": (3,)},
        key_lengths=(1,),
    )
    return s.Model(
        format_version=s.FORMAT_VERSION,
        listeners=(
            s.Listener("public", "127.0.0.1", 8080, s.TlsOff()),
            s.Listener("secure", "127.0.0.1", 8443, s.ServerTls("CERT PEM", "KEY PEM", (), (), (), s.ClientAuthOff())),
        ),
        admin=s.Admin("127.0.0.1", 9901),
        limits=s.Limits(8192, 65536, 100, 1048576, 10000, 60000, 10000, 65536, 100),
        access_log=s.AccessLog("-", 4096),
        tracing=s.TracingOff(),
        clusters=(api, canary),
        virtual_hosts=(
            s.VirtualHost("api", ("api.example.com", "*.api.example.com"), (0, 1, 2), api_index, s.RateLimitOff()),
            s.VirtualHost(
                "other", ("*",), (3, 4), other_index,
                s.RateLimit(bytes(16), "5/m", 12_000_000_000, 5, "client_ip", "", True, True,
                            '"virtual_host";q=5;w=60'),
            ),
        ),
        domains=s.DomainIndex(
            exact={"api.example.com": 0}, suffix={".api.example.com": 0}, prefix={}, default=1
        ),
        routes=routes,
    )


MODEL = hand_model()
SEALED = artifact.seal(s.Validated(MODEL))
HEADER = struct.Struct("<4sHHB7sQ16s24s")


def fields_of(data: bytes) -> list[object]:
    return list(HEADER.unpack_from(data, 0))


def with_header(data: bytes, **changes: object) -> bytes:
    """Rewrite header fields by name, keep the payload."""
    names = ["magic", "version", "flags", "alg", "res1", "length", "digest", "res2"]
    values = dict(zip(names, fields_of(data), strict=True))
    values.update(changes)
    return HEADER.pack(*(values[n] for n in names)) + data[artifact.HEADER_SIZE :]


def sealed_payload(payload: bytes) -> bytes:
    """A well-formed header with the right length and checksum around any payload."""
    return with_header(
        SEALED[: artifact.HEADER_SIZE] + payload,
        length=len(payload),
        digest=xxhash.xxh3_128_digest(payload),
    )


def reason_of(data: bytes | memoryview) -> str:
    with pytest.raises(ArtifactError) as info:
        artifact.read(data)
    return info.value.reason


# --------------------------------------------------------------------------- round trip


def test_seal_then_read_gives_an_equal_model() -> None:
    header, model = artifact.read(SEALED)
    assert model == MODEL
    assert header.format_version == s.FORMAT_VERSION
    assert header.payload_length == len(SEALED) - artifact.HEADER_SIZE
    assert header.checksum == xxhash.xxh3_128_hexdigest(SEALED[artifact.HEADER_SIZE :])
    assert len(header.checksum) == 32


def test_sealing_twice_gives_identical_bytes() -> None:
    assert artifact.seal(s.Validated(hand_model())) == SEALED


def test_read_accepts_a_memoryview() -> None:
    _, model = artifact.read(memoryview(SEALED))
    assert model == MODEL


def test_seal_accepts_only_a_validated_model() -> None:
    with pytest.raises(TypeError):
        artifact.seal(MODEL)  # type: ignore[arg-type]


def test_verify_checks_the_checksum_but_does_not_decode() -> None:
    data = sealed_payload(b"\xc0")  # msgpack nil: checksum right, not a Model
    assert artifact.verify(data).checksum == xxhash.xxh3_128_hexdigest(b"\xc0")
    assert reason_of(data) == "decode_failed"


def test_read_file_names_an_unreadable_file(tmp_path: object) -> None:
    with pytest.raises(ArtifactError) as info:
        artifact.read_file(f"{tmp_path}/missing.pvs")
    assert info.value.reason == "unreadable"


# --------------------------------------------------------------------------- named reasons


@pytest.mark.parametrize("size", [0, 1, artifact.HEADER_SIZE - 1])
def test_shorter_than_the_header_is_truncated(size: int) -> None:
    assert reason_of(SEALED[:size]) == "truncated"


def test_a_short_payload_is_truncated() -> None:
    assert reason_of(SEALED[:-1]) == "truncated"


def test_bad_magic() -> None:
    assert reason_of(with_header(SEALED, magic=b"PAVZ")) == "bad_magic"


def test_unsupported_version() -> None:
    data = with_header(SEALED, version=s.FORMAT_VERSION + 1)
    assert reason_of(data) == "unsupported_version"


def test_unknown_flags() -> None:
    assert reason_of(with_header(SEALED, flags=1)) == "flags_unknown"


def test_unknown_checksum_algorithm() -> None:
    assert reason_of(with_header(SEALED, alg=2)) == "bad_algorithm"


@pytest.mark.parametrize(
    "change", [{"res1": b"\x00" * 6 + b"\x01"}, {"res2": b"\x01" + b"\x00" * 23}]
)
def test_reserved_bytes_must_be_zero(change: dict[str, bytes]) -> None:
    assert reason_of(with_header(SEALED, **change)) == "reserved_nonzero"


def test_trailing_bytes_are_a_length_mismatch() -> None:
    assert reason_of(SEALED + b"\x00") == "length_mismatch"


def test_a_flipped_payload_bit_is_a_checksum_mismatch() -> None:
    data = bytearray(SEALED)
    data[-1] ^= 0x01
    assert reason_of(bytes(data)) == "checksum_mismatch"


def test_a_flipped_digest_bit_is_a_checksum_mismatch() -> None:
    data = bytearray(SEALED)
    data[24] ^= 0x80
    assert reason_of(bytes(data)) == "checksum_mismatch"


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # nothing at all
        b"\xc1",  # a byte msgpack never uses
        msgspec.msgpack.encode({"format_version": 1}),  # msgpack, but not the model's shape
        msgspec.msgpack.encode(list(msgspec.msgpack.decode(SEALED[artifact.HEADER_SIZE :]))[:-1]),
        SEALED[artifact.HEADER_SIZE :] + b"\x00",  # the model followed by junk
        b"\x91" * 100_000 + b"\xc0",  # nested arrays, deeper than any recursion limit
        b"\xdd\xff\xff\xff\xff",  # an array header claiming 4 G items
    ],
    ids=[
        "empty",
        "invalid-msgpack",
        "wrong-shape",
        "missing-field",
        "trailing-junk",
        "deep-nesting",
        "huge-length",
    ],
)
def test_a_payload_with_a_correct_checksum_that_is_not_the_model(payload: bytes) -> None:
    data = sealed_payload(payload)
    artifact.verify(data)  # integrity holds: only decoding can tell
    assert reason_of(data) == "decode_failed"


def test_every_reason_is_one_of_the_documented_names() -> None:
    documented = ArtifactError.__doc__ or ""
    assert [r for r in sorted(REASONS) if f"``{r}``" not in documented] == []


# --------------------------------------------------------------------------- mutations

flip = st.tuples(st.just("flip"), st.integers(0, len(SEALED) * 8 - 1))
flip_header = st.tuples(st.just("flip"), st.integers(0, artifact.HEADER_SIZE * 8 - 1))
truncate = st.tuples(st.just("truncate"), st.integers(0, len(SEALED) - 1))
extend = st.tuples(st.just("extend"), st.binary(min_size=1, max_size=64))
overwrite = st.tuples(
    st.just("overwrite"), st.tuples(st.integers(0, len(SEALED) - 1), st.binary(min_size=1))
)
mutation = st.one_of(flip, flip_header, truncate, extend, overwrite)


def mutate(data: bytes, steps: list[tuple[str, object]]) -> bytes:
    buf = bytearray(data)
    for kind, arg in steps:
        if kind == "flip":
            assert isinstance(arg, int)
            if arg // 8 < len(buf):
                buf[arg // 8] ^= 1 << (arg % 8)
        elif kind == "truncate":
            assert isinstance(arg, int)
            del buf[min(arg, len(buf)) :]
        elif kind == "extend":
            assert isinstance(arg, bytes)
            buf.extend(arg)
        else:
            assert isinstance(arg, tuple)
            offset, chunk = arg
            buf[offset : offset + len(chunk)] = chunk  # may also grow the buffer
    return bytes(buf)


@settings(max_examples=400, deadline=None, suppress_health_check=[HC.too_slow])
@given(st.lists(mutation, min_size=1, max_size=3))
def test_any_mutation_is_rejected_with_a_named_reason(steps: list[tuple[str, object]]) -> None:
    data = mutate(SEALED, steps)
    if data == SEALED:  # a mutation that leaves the bytes identical is not a mutation
        return
    with pytest.raises(ArtifactError) as info:
        artifact.read(data)
    assert info.value.reason in REASONS


# --------------------------------------------------------------------------- readable view


def test_the_view_round_trips_through_json() -> None:
    view = json.loads(json.dumps(to_view(MODEL)))
    assert from_view(view) == MODEL


def test_the_view_names_fields_and_tags_variants() -> None:
    view = to_view(MODEL)
    assert view["admin"] == {"type": "on", "host": "127.0.0.1", "port": 9901}
    assert view["clusters"][1]["health_check"] == {"type": "off"}
    assert view["routes"][0]["action"]["body"] == "ok\n"
    assert view["routes"][3]["action"]["body"] == {"base64": "/wBiaW5hcnk="}
    assert view["routes"][1]["action"]["retry"]["type"] == "on"


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda v: v["admin"].update(type="maybe"), "$.admin"),
        (lambda v: v["limits"].update(extra=1), "unknown field"),
        (lambda v: v["limits"].pop("max_headers"), "missing field"),
        (lambda v: v["routes"][0]["action"].update(body={"base64": "***"}), "base64"),
        (lambda v: v["limits"].update(max_headers="many"), "Expected `int`"),
        (lambda v: v.update(clusters={}), "expected list"),
    ],
    ids=["bad-tag", "unknown-field", "missing-field", "bad-base64", "wrong-type", "wrong-shape"],
)
def test_a_broken_view_is_rejected(edit: object, needle: str) -> None:
    view = to_view(MODEL)
    edit(view)  # type: ignore[operator]
    with pytest.raises(ArtifactError) as info:
        from_view(view)
    assert info.value.reason == "decode_failed"
    assert needle in str(info.value)


# ------------------------------------------------------------------------ lazy reading


def test_lazy_model_mirrors_the_model_field_by_field() -> None:
    """array_like decodes by position: a field added to Model but not to LazyModel would
    shift every later field. Same names, same order, same types except the routes."""
    model_fields = msgspec.structs.fields(s.Model)
    lazy_fields = msgspec.structs.fields(artifact.LazyModel)
    assert [f.name for f in lazy_fields] == [f.name for f in model_fields]
    for mf, lf in zip(model_fields, lazy_fields, strict=True):
        if mf.name != "routes":
            assert lf.type == mf.type, mf.name


def test_lazy_read_decodes_routes_equal_to_the_eager_read() -> None:
    header, lazy = artifact.read_lazy(SEALED)
    _, eager = artifact.read(SEALED)
    routes = artifact.LazyRoutes(lazy.routes)
    assert header.checksum == artifact.verify(SEALED).checksum
    assert len(routes) == len(eager.routes)
    assert [routes[i] for i in range(len(routes))] == list(eager.routes)
    assert lazy.virtual_hosts == eager.virtual_hosts and lazy.domains == eager.domains


def test_lazy_read_verifies_before_decoding() -> None:
    flipped = bytearray(SEALED)
    flipped[-1] ^= 0x01
    with pytest.raises(ArtifactError) as caught:
        artifact.read_lazy(bytes(flipped))
    assert caught.value.reason == "checksum_mismatch"
