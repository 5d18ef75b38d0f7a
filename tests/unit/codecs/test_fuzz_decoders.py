"""Hostile input, generated: every message is either a valid reading or dead-lettered with a
precise reason.

Each category runs generated messages through the clean stage's own code (decode + clean,
``CleanHandler.process`` with the shipped pipeline's settings) and checks, per message:
a row that passes is a valid reading (finite, in range, a device id); a row that does not
carries a reason of the category's own form (never a generic "cannot decode", never an
internal error) and its original bytes; and ``decode_one`` raises a ``RecordError``
(``DecodeError``) for it, never anything else. Counts per category are printed at the end.
"""

from __future__ import annotations

import json
import math
import re
import struct
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from confluent_kafka.schema_registry import Schema
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streamflow.agents.clean import CleanHandler
from streamflow.codecs import RecordCodec, registry_for
from streamflow.codecs.flatavro import zigzag
from streamflow.errors import DecodeError, RecordError
from streamflow.headers import H_TRUNCATED
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE, ROOT

READING = str(ROOT / "schemas/telemetry_reading.avsc")
REGISTRY = "mock://fuzz-decoders"
SETTINGS = load_settings(PIPELINE, environ={})
CLEAN = CleanHandler(SimpleNamespace(settings=SETTINGS))  # type: ignore[arg-type]
WIRE = CleanHandler(
    SimpleNamespace(
        settings=load_settings(  # type: ignore[arg-type]
            PIPELINE, {"input.schema_registry_url": REGISTRY}, environ={}
        )
    )
)
LIMITS = SETTINGS.limits
FEATURES = SETTINGS.feature_names
REQUIRED = [f.name for f in SETTINGS.features if f.required]
STRINGS = ("device_id", "status")
AVRO = RecordCodec(READING)
COUNTS: Counter[str] = Counter()
REJECTED: Counter[str] = Counter()
CODE_OF: dict[str, str] = {}  # each reason seen -> the ReasonCode its dead letter carried
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The reasons a decoder may give, each naming what is wrong and where.
AVRO_REASON = (
    r"avro: (truncated record \(EOF\)|(field \w+: )?(negative length -?\d+|"
    r"length prefix larger than the message \(\d+ bytes, \d+ left\)|"
    r"(string|bytes value) of \d+ bytes exceeds max_string_length \d+|"
    r"union branch -?\d+ out of range)|\d+ trailing bytes after the record \(wrong schema\?\)|"
    r"varint longer than 10 bytes|string is not utf-8 \(.+\)|"
    r"boolean byte \d+ is neither 0 nor 1|varint larger than 64 bits)"
    r"(; it starts like the Confluent wire format \(magic byte 0, schema id \d+\) but "
    r"input.schema_registry_url is not set)?"
)
JSON_REASON = (
    r"json: (invalid JSON: .+|not utf-8 \(.+ at byte \d+\)|nested too deeply|missing field \w+|"
    r"top-level value is (an object|an array|a string|a boolean|null|a number)"
    r"( nested too deeply)?, not an object|"
    r"field \w+: (expected (a number|a string|an integer \(epoch ms\)), got .+|"
    r".+ is too large for a number|.+ does not fit a 64-bit integer \(epoch ms\)|"
    r"string of \d+ characters exceeds max_string_length \d+|"
    r"not valid unicode \(lone surrogate .+ at character \d+\)))"
)
CLEAN_REASON = (
    r"(missing required field \w+|\w+: non-finite value (nan|inf|-inf)|\w+: value \S+ out of range "
    r"\[\S+, \S+\]|\w+: expected an integer, got \S+)"
)
EMPTY_REASON = r"empty message( \(only whitespace\))?"
SIZE_REASON = r"message of \d+ bytes exceeds max_message_bytes \d+( \(key \d+ bytes\))?"
ANY_REASON = "|".join((AVRO_REASON, JSON_REASON, CLEAN_REASON, EMPTY_REASON, SIZE_REASON))


def judge(
    category: str,
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None = None,
    handler: CleanHandler = CLEAN,
) -> list[str | None]:
    """Run ``values`` through the clean stage: each row's reason (None: a valid reading)."""
    keys = list(keys) if keys is not None else [b"k"] * len(values)
    msgs = [
        SimpleNamespace(value=v, key=k, offset=i, timestamp=0)
        for i, (v, k) in enumerate(zip(values, keys, strict=True))
    ]
    batch, rejected = handler.process("raw", 0, msgs)
    assert len(batch) + len(rejected) == len(values)
    rules = handler.kind.rules  # type: ignore[attr-defined]  # the tabular kind
    assert np.isfinite(batch.features).all()
    assert ((batch.features >= rules.lo) & (batch.features <= rules.hi)).all()
    assert all(isinstance(d, str) and d for d in batch.device_id_list())
    reasons: list[str | None] = [None] * len(values)
    for r in rejected:
        original = values[r.source_offset]
        truncated = dict(r.headers).get(H_TRUNCATED)
        if truncated is None:
            assert (
                r.value == original and r.key == keys[r.source_offset]
            )  # the original bytes, unchanged
        else:
            assert original is not None and r.value == original[: len(r.value or b"")]
        assert "internal error" not in r.reason and r.code != "other", r.reason
        reasons[r.source_offset] = r.reason
        CODE_OF[r.reason] = r.code
        if r.error_class == "DecodeError":
            with pytest.raises(DecodeError) as exc:
                handler.kind.decoder.decode_one(original, len(keys[r.source_offset] or b""))
            assert isinstance(exc.value, RecordError) and exc.value.reason == r.reason
            assert exc.value.code == r.code  # the decoder chose the dead letter's code
    COUNTS[category] += len(values)
    REJECTED[category] += len(rejected)
    return reasons


def assert_reasons(reasons: list[str | None], pattern: str, *, may_pass: bool = False) -> None:
    for r in reasons:
        if r is None:
            assert may_pass, "a hostile record was accepted"
            continue
        assert re.fullmatch(pattern, r), r


def reading(draw: st.DrawFn) -> dict[str, Any]:
    """A valid reading: every required feature present and in range, others maybe null."""
    rec: dict[str, Any] = {
        "device_id": draw(st.text(min_size=1, max_size=30)),
        "timestamp": draw(st.integers(0, 2**62)),
        "status": draw(st.none() | st.text(max_size=10)),
    }
    for f in SETTINGS.features:
        lo, hi = f.min if f.min is not None else -1e6, f.max if f.max is not None else 1e6
        value = draw(st.floats(lo, hi))
        rec[f.name] = value if f.required or draw(st.booleans()) else None
    return rec


readings = st.composite(reading)()


# ---- the categories --------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=2048), min_size=1, max_size=8))
def test_random_bytes(values: list[bytes]) -> None:
    assert_reasons(judge("random bytes", values), ANY_REASON, may_pass=True)


@FAST
@given(readings, st.data())
def test_truncated_avro_and_json(rec: dict[str, Any], data: st.DataObject) -> None:
    avro, text = AVRO.encode(rec), json.dumps(rec).encode()
    cut_a, cut_j = (
        data.draw(st.integers(1, len(avro) - 1)),
        data.draw(st.integers(1, len(text) - 1)),
    )
    reasons = judge("truncated", [avro[:cut_a], text[:cut_j]])
    assert_reasons(
        reasons[:1],
        r"avro: (truncated record \(EOF\)|field \w+: length prefix larger than the message "
        r"\(\d+ bytes, \d+ left\))"
        r"(; it starts like .+)?|json: (top-level value is .+, not an object|invalid JSON: .+|"
        r"not utf-8 \(.+\))|" + EMPTY_REASON,
    )  # b"4", b" {", b"\n": auto format takes what looks like JSON as JSON (a 16-byte device_id
    # starting with "{" begins b" {"; cut inside a multi-byte character it is not UTF-8)
    assert_reasons(reasons[1:], r"json: invalid JSON: .+")


def _with_string(rec: dict[str, Any], field: str, length: int, body: bytes) -> bytes:
    """``rec`` in Avro with ``field``'s string replaced by a length prefix and ``body``."""
    if field == "device_id":
        return zigzag(length) + body + AVRO.encode({**rec, "device_id": ""})[1:]
    return AVRO.encode({**rec, "status": None})[:-1] + b"\x02" + zigzag(length) + body


@FAST
@given(readings, st.integers(LIMITS.max_message_bytes, 2**62), st.sampled_from(STRINGS))
def test_huge_string_length_prefixes(rec: dict[str, Any], length: int, field: str) -> None:
    """A string claiming up to 2**62 bytes: refused from its prefix, as a corrupt record."""
    value = _with_string(rec, field, length, b"x" * 16)
    # a value that starts like a JSON object (b" {": a 16-byte device_id starting with "{") is
    # read as JSON first, and JSON's reason is given (test_truncated_records)
    assume(value.lstrip()[:1] != b"{")
    left = len(value) - len(zigzag(length)) if field == "device_id" else 16
    reasons = judge("huge length prefix", [value])
    assert reasons == [
        f"avro: field {field}: length prefix larger than the message ({length} bytes, {left} left)"
    ]


@settings(max_examples=40, deadline=None)
@given(readings, st.integers(LIMITS.max_string_length + 1, 200_000), st.sampled_from(STRINGS))
def test_strings_over_the_limit(rec: dict[str, Any], length: int, field: str) -> None:
    """A string that is really there and longer than max_string_length: refused, naming the
    limit."""
    reasons = judge(
        "huge length prefix",
        [
            _with_string(rec, field, length, b"s" * length),
            json.dumps({**rec, field: "s" * length}).encode(),
        ],
    )
    assert reasons == [
        f"avro: field {field}: string of {length} bytes exceeds max_string_length "
        f"{LIMITS.max_string_length}",
        f"json: field {field}: string of {length} characters exceeds "
        f"max_string_length {LIMITS.max_string_length}",
    ]


def _register(schema: dict[str, Any]) -> int:
    return int(
        registry_for(REGISTRY).client.register_schema(
            f"s{hash(json.dumps(schema))}", Schema(json.dumps(schema), "AVRO")
        )
    )


WITH_COLLECTIONS = {**json.loads((ROOT / "schemas/telemetry_reading.avsc").read_text())}
WITH_COLLECTIONS["fields"] = [
    *WITH_COLLECTIONS["fields"],
    {"name": "tags", "type": {"type": "array", "items": "null"}},
    {"name": "attrs", "type": {"type": "map", "values": "null"}},
]
TELEMETRY_ID = _register(json.loads((ROOT / "schemas/telemetry_reading.avsc").read_text()))
COLLECTIONS_ID = _register(WITH_COLLECTIONS)


@FAST
@given(readings, st.integers(LIMITS.max_array_length + 1, 2**62), st.booleans(), st.booleans())
def test_huge_array_and_map_counts(
    rec: dict[str, Any], count: int, in_map: bool, sized_block: bool
) -> None:
    """A registry writer schema with an array and a map of nulls: a count past max_array_length is
    refused before a single item is read (fastavro alone would loop ``count`` times)."""
    block = zigzag(-count if sized_block else count) + (zigzag(1) if sized_block else b"")
    body = AVRO.encode(rec) + ((zigzag(0) + block) if in_map else (block + zigzag(0)))
    value = b"\x00" + struct.pack(">I", COLLECTIONS_ID) + body
    kind, field = ("map", "attrs") if in_map else ("array", "tags")
    reasons = judge("huge length prefix", [value], handler=WIRE)
    assert reasons == [
        f"avro: field {field}: {kind} of {count} items exceeds max_array_length "
        f"{LIMITS.max_array_length}"
    ]


def test_huge_prefixes_allocate_nothing() -> None:
    rec = {
        "device_id": "d",
        "timestamp": 1,
        "cpu_temp_c": 50.0,
        "power_w": 300.0,
        "cpu_util_pct": 5.0,
    }
    body = AVRO.encode(rec)
    values = [
        zigzag(2**62) + body,
        b"\x00" + struct.pack(">I", COLLECTIONS_ID) + body + zigzag(2**62),
        b"\x00"
        + struct.pack(">I", COLLECTIONS_ID)
        + body
        + zigzag(0)
        + zigzag(-(2**62))
        + zigzag(2**62),
    ]
    tracemalloc.start()
    try:
        reasons = judge("huge length prefix", values[:1]) + judge(
            "huge length prefix", values[1:], handler=WIRE
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert all(r and ("exceeds max_" in r or "larger than the message" in r) for r in reasons), (
        reasons
    )
    assert peak < 1_000_000, f"{peak} bytes allocated to refuse three records"


@FAST
@given(st.integers(0, 2**32 - 1), st.binary(max_size=64), st.integers(1, 255))
def test_unknown_schema_ids_and_foreign_magic_bytes(
    schema_id: int, payload: bytes, magic: int
) -> None:
    if schema_id in (TELEMETRY_ID, COLLECTIONS_ID):
        schema_id += 1000
    values = [
        b"\x00" + struct.pack(">I", schema_id) + payload,
        bytes([magic]) + struct.pack(">I", 1) + payload,
        b"\x00" + payload[:3],
    ]
    reasons = judge("unknown schema id", values, handler=WIRE)
    assert reasons[0] == f"registry: unknown schema id {schema_id}"
    if reasons[1] is not None and not reasons[1].startswith(
        "json:"
    ):  # '{' and whitespace start JSON
        assert (
            reasons[1] == f"registry: magic byte {magic} is not 0 (not the Confluent wire format)"
        )
    assert reasons[2] in (
        f"registry: message of {len(values[2])} bytes is shorter than the 5-byte "
        "wire-format header",
        "empty message",
    )


def _not_utf8(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return True
    return False


@FAST
@given(readings, st.binary(min_size=1, max_size=40).filter(_not_utf8), st.integers(0xD800, 0xDFFF))
def test_strings_that_are_not_utf8(rec: dict[str, Any], bad: bytes, surrogate: int) -> None:
    avro_bad = zigzag(len(bad)) + bad + AVRO.encode({**rec, "device_id": ""})[1:]
    text = json.dumps({**rec, "device_id": "X"}).encode()
    json_bad = text.replace(b'"X"', b'"' + bad.replace(b'"', b"").replace(b"\\", b"") + b'"', 1)
    json_surrogate = text.replace(b'"X"', b'"\\u%04x"' % surrogate, 1)
    reasons = judge("non-utf-8", [avro_bad, json_bad, json_surrogate])
    # b"\n{...": a 5-byte device_id starting with "{" looks like JSON to the auto format
    assert reasons[0] is not None and re.fullmatch(
        r"(avro: string is|json:) not utf-8 \(.+\)", reasons[0]
    ), reasons[0]
    if _not_utf8(bad.replace(b'"', b"").replace(b"\\", b"")):
        # json.loads reads bytes with "surrogatepass": a surrogate encoded as UTF-8 bytes
        # (b"\xed\xa0\x80") decodes, and the device_id check names the lone surrogate instead
        assert reasons[1] is not None and re.fullmatch(
            r"json: not utf-8 \(.+ at byte \d+\)"
            r"|json: field device_id: not valid unicode \(lone surrogate .+\)",
            reasons[1],
        ), reasons[1]
    assert reasons[2] == (
        "json: field device_id: not valid unicode "
        f"(lone surrogate '\\u{surrogate:04x}' at character 0)"
    )
    assert all(CODE_OF[r] == "invalid_utf8" for r in reasons if r is not None and "utf" in r)


@FAST
@given(readings, st.sampled_from(FEATURES), st.sampled_from([math.nan, math.inf, -math.inf]))
def test_nan_and_infinite_values(rec: dict[str, Any], name: str, bad: float) -> None:
    rec = {**rec, name: bad}
    text = json.dumps(rec).encode()  # NaN / Infinity / -Infinity: Python's JSON extension
    overflow = text.replace(json.dumps(bad).encode(), b"1e400" if bad > 0 else b"-1e400")
    reasons = judge("NaN/inf", [AVRO.encode(rec), text, overflow])
    first = next(f for f in FEATURES if isinstance(rec[f], float) and not math.isfinite(rec[f]))
    shown = {"nan": "nan", "inf": "inf", "-inf": "-inf"}[str(bad)]
    assert reasons[:2] == [f"{first}: non-finite value {shown}"] * 2
    assert reasons[2] is not None and re.fullmatch(rf"{first}: non-finite value -?inf", reasons[2])


json_wrong = (
    st.text(max_size=20)
    | st.booleans()
    | st.lists(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)


@FAST
@given(
    readings,
    st.sampled_from([*FEATURES, "device_id", "timestamp", "status"]),
    json_wrong,
    st.integers(10**310, 10**400),
)
def test_values_of_the_wrong_type(rec: dict[str, Any], field: str, wrong: Any, huge: int) -> None:
    if field in STRINGS and isinstance(wrong, str):
        wrong = 5  # a string is right for these
    values = [json.dumps({**rec, field: wrong}).encode()]
    if field in FEATURES or field == "timestamp":
        values.append(json.dumps({**rec, field: huge}).encode())
    reasons = judge("wrong type", values)
    assert reasons[0] is not None and reasons[0].startswith(f"json: field {field}: expected a"), (
        reasons[0]
    )
    if len(values) > 1:
        assert reasons[1] in (
            f"json: field {field}: int of {len(str(huge))} digits is too large for a number",
            f"json: field {field}: int of {len(str(huge))} digits does not fit a 64-bit integer "
            "(epoch ms)",
        )
    assert_reasons(reasons, JSON_REASON)


@FAST
@given(
    st.lists(
        st.sampled_from([b"", None, b" ", b"\n", b"\t \r\n", b" " * 1000]), min_size=1, max_size=10
    )
)
def test_empty_messages(values: list[bytes | None]) -> None:
    assert_reasons(judge("empty", values), EMPTY_REASON)


@settings(max_examples=12, deadline=None)
@given(
    st.integers(LIMITS.max_message_bytes + 1, 8_000_000),
    st.integers(0, 4096),
    st.binary(min_size=1, max_size=1),
)
def test_messages_of_several_megabytes(size: int, key_size: int, fill: bytes) -> None:
    value, key = fill * (size - key_size), b"k" * key_size
    limit = LIMITS.max_message_bytes
    reasons = judge("several MB", [value, b"x" * (limit - 10)], [key, b"0123456789a"])
    suffix = f" (key {key_size} bytes)" if key_size else ""
    assert reasons[0] == f"message of {size} bytes exceeds max_message_bytes {limit}{suffix}"
    assert (
        reasons[1]
        == f"message of {limit + 1} bytes exceeds max_message_bytes {limit} (key 11 bytes)"
    )


@FAST
@given(readings, st.sets(st.sampled_from(["device_id", "timestamp", *FEATURES]), min_size=1))
def test_missing_keys(rec: dict[str, Any], gone: set[str]) -> None:
    text = json.dumps({k: v for k, v in rec.items() if k not in gone}).encode()
    nulls = json.dumps({k: (None if k in gone else v) for k, v in rec.items()}).encode()
    reasons = judge("missing keys", [text, nulls])
    for r in reasons:
        if "device_id" in gone:
            assert r == "json: missing field device_id"
        elif "timestamp" in gone:
            assert r == "json: missing field timestamp"
        elif gone & set(REQUIRED):
            assert r == f"missing required field {next(f for f in REQUIRED if f in gone)}"
        else:
            assert r is None  # an optional feature left out takes its default


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@FAST
@given(json_values.filter(lambda v: not isinstance(v, dict)), st.sampled_from(["", " ", "\n\t"]))
def test_json_that_is_not_an_object(value: Any, space: str) -> None:
    reasons = judge("JSON not an object", [(space + json.dumps(value)).encode()])
    kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
    assert reasons == [f"json: top-level value is {kind}, not an object"]


@settings(max_examples=40, deadline=None)
@given(
    readings,
    st.integers(1, 200_000),
    st.sampled_from(["top", "feature", "unknown field", "open"]),
    st.sampled_from(["[]", "{}"]),
)
def test_deeply_nested_json(rec: dict[str, Any], depth: int, where: str, brackets: str) -> None:
    o, c = brackets
    nest = (o if o == "[" else '{"a":') * depth + ("1" if o == "{" else "") + c * depth
    text = json.dumps(rec)
    if where == "top":
        value = nest
    elif where == "open":
        value = text[:-1] + ', "x": ' + o * depth  # never closed
    else:
        field = FEATURES[0] if where == "feature" else "extra"
        value = text[:-1] + f', "{field}": {nest}}}'
    reasons = judge("deeply nested JSON", [value.encode()])
    assert_reasons(
        reasons, f"{JSON_REASON}|{SIZE_REASON}", may_pass=where == "unknown field"
    )  # 6 B a level


def test_zz_counts_per_category(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last (file order): how many inputs each category tried, and how many were
    dead-lettered."""
    with capsys.disabled():
        print("\nhostile inputs tried per category (rejected):")
        for cat, n in sorted(COUNTS.items()):
            print(f"  {cat:20s} {n:6d} ({REJECTED[cat]})")
    assert len(COUNTS) >= 11 or len(COUNTS) == 0  # all ran, or this test ran alone
