"""The generated reader for flat Avro records agrees with fastavro, and is at least as strict."""

from __future__ import annotations

import io
import json
import math
import struct
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamflow.codecs import _strip_logical_types
from streamflow.codecs.flatavro import compile_reader, compile_writer
from streamflow.errors import DecodeError
from tests.conftest import ROOT

READING = _strip_logical_types(json.loads((ROOT / "schemas/telemetry_reading.avsc").read_text()))
ALL_TYPES = {
    "type": "record",
    "name": "All",
    "fields": [
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "y", "type": "bytes"},
        {"name": "n", "type": "null"},
        {"name": "os", "type": ["string", "null"]},
        {"name": "ol", "type": ["null", "long"]},
    ],
}


def fast(schema: dict[str, Any], data: bytes) -> dict[str, Any]:
    buf = io.BytesIO(data)
    rec = fastavro.schemaless_reader(buf, fastavro.parse_schema(schema))
    if buf.tell() != len(data):
        raise ValueError("trailing bytes")
    return rec  # type: ignore[return-value]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def encode(schema: dict[str, Any], rec: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), rec)
    return buf.getvalue()


maybe_double = st.none() | st.floats(allow_nan=True, allow_infinity=True)
readings = st.fixed_dictionaries(
    {
        f["name"]: (
            st.text(max_size=40)
            if f["name"] == "device_id"
            else st.integers(-(2**63), 2**63 - 1)
            if f["name"] == "timestamp"
            else st.none() | st.text(max_size=20)
            if f["name"] == "status"
            else maybe_double
        )
        for f in READING["fields"]
    }
)
all_types = st.fixed_dictionaries(
    {
        "b": st.booleans(),
        "i": st.integers(-(2**31), 2**31 - 1),
        "l": st.integers(-(2**63), 2**63 - 1),
        "f": st.floats(width=32),
        "d": st.floats(),
        "s": st.text(max_size=30),
        "y": st.binary(max_size=30),
        "n": st.none(),
        "os": st.none() | st.text(max_size=5),
        "ol": st.none() | st.integers(-(2**63), 2**63 - 1),
    }
)


@pytest.mark.parametrize(
    "schema,records",
    [(READING, readings), (ALL_TYPES, all_types)],
    ids=["telemetry-reading", "every-primitive-type"],
)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_records_decode_exactly_as_fastavro(
    schema: dict[str, Any], records: st.SearchStrategy[dict[str, Any]], data: st.DataObject
) -> None:
    encoded = encode(schema, data.draw(records))
    read = compile_reader(schema)
    assert read is not None
    assert same(read(encoded), fast(schema, encoded))


@settings(max_examples=500, deadline=None)
@given(readings, st.data())
def test_damaged_bytes_are_rejected_whenever_fastavro_rejects_them(
    rec: dict[str, Any], data: st.DataObject
) -> None:
    good = encode(READING, rec)
    cut = data.draw(st.integers(0, len(good)))
    flip = data.draw(st.integers(0, max(len(good) - 1, 0)))
    damaged = [
        good[:cut],
        good + data.draw(st.binary(min_size=1, max_size=4)),
        good[:flip] + bytes([data.draw(st.integers(0, 255))]) + good[flip + 1 :],
        data.draw(st.binary(max_size=200)),
    ]
    read = compile_reader(READING)
    assert read is not None
    for value in damaged:
        try:
            expected = fast(READING, value)
        except Exception:
            with pytest.raises(DecodeError):
                read(value)
            continue
        try:
            got = read(value)
        except DecodeError:
            # stricter than fastavro is allowed (e.g. a non-utf-8 string fastavro let through)
            continue
        assert same(got, expected)


def test_precise_reasons() -> None:
    read = compile_reader(READING)
    assert read is not None
    good = encode(
        READING, {f["name"]: None for f in READING["fields"]} | {"device_id": "d", "timestamp": 1}
    )
    with pytest.raises(DecodeError, match="truncated"):
        read(good[:-1])
    with pytest.raises(DecodeError, match="2 trailing bytes"):
        read(good + b"\x00\x00")
    with pytest.raises(DecodeError, match="length prefix larger than the message"):
        read(b"\xfe\xff\xff\xff\x0f" + good[2:])  # device_id claims ~2 GB
    with pytest.raises(DecodeError, match="union branch 2 out of range"):
        read(good[:3] + b"\x04" + good[4:])  # cpu_temp_c: branch 2 of a 2-branch union
    with pytest.raises(DecodeError, match="not utf-8"):
        read(b"\x02\xff" + good[2:])


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "record", "name": "N", "fields": [{"name": "inner", "type": READING}]},
        {
            "type": "record",
            "name": "A",
            "fields": [{"name": "xs", "type": {"type": "array", "items": "long"}}],
        },
        {
            "type": "record",
            "name": "E",
            "fields": [{"name": "e", "type": {"type": "enum", "name": "K", "symbols": ["a"]}}],
        },
        {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["long", "string"]}]},
        {"type": "array", "items": "long"},
    ],
)
def test_schemas_that_are_not_flat_are_left_to_fastavro(schema: dict[str, Any]) -> None:
    assert compile_reader(schema) is None


@settings(max_examples=300, deadline=None)
@given(all_types)
def test_the_writer_encodes_exactly_as_fastavro(rec: dict[str, Any]) -> None:
    write = compile_writer(ALL_TYPES)
    assert write is not None
    assert write(*[rec[f["name"]] for f in ALL_TYPES["fields"]]) == encode(ALL_TYPES, rec)


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=30),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.sampled_from(["normal", "anomaly"]),
    st.floats(),
)
def test_results_encode_exactly_as_fastavro(
    device: str, ts: int, score: float, label: str, lat: float
) -> None:
    from streamflow.codecs import ResultEncoder

    enc = ResultEncoder.from_file(str(ROOT / "schemas/scored_result.avsc"))
    assert enc._write is not None  # the shipped schema takes the generated writer
    got = enc.encode(
        {"device_id": [device], "timestamp": [ts], "score": [score], "label": [label],
         "model_name": ["m"], "model_version": ["1"], "latency_ms": [lat]},
        1,
    )  # fmt: skip
    schema = _strip_logical_types(json.loads((ROOT / "schemas/scored_result.avsc").read_text()))
    assert got == [
        encode(
            schema,
            {
                "device_id": device,
                "timestamp": ts,
                "score": score,
                "label": label,
                "model_name": "m",
                "model_version": "1",
                "latency_ms": lat,
            },
        )
    ]


def test_the_writer_refuses_values_of_the_wrong_type() -> None:
    write = compile_writer(ALL_TYPES)
    assert write is not None
    ok = [True, 1, 2, 1.5, 2.5, "s", b"y", None, None, 3]
    write(*ok)
    for i, bad in [(1, "1"), (2, 1.5), (4, "x"), (5, 5), (9, "x")]:
        with pytest.raises((TypeError, AttributeError, struct.error)):
            write(*ok[:i], bad, *ok[i + 1 :])


NESTED = {
    "type": "record",
    "name": "Outer",
    "namespace": "x.y",
    "fields": [
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": ["null", "double"]}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["a", "b", "c"]}},
        {"name": "mac", "type": {"type": "fixed", "name": "Mac", "size": 6}},
        {
            "name": "next",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Inner",
                    "fields": [
                        {"name": "k", "type": "Kind"},
                        {"name": "blob", "type": "bytes"},
                        {"name": "ok", "type": "boolean"},
                        {"name": "f", "type": "float"},
                        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                        {"name": "more", "type": {"type": "array", "items": "Inner"}},
                    ],
                },
            ],
        },
    ],
}
inner = st.deferred(
    lambda: st.fixed_dictionaries(
        {
            "k": st.sampled_from(["a", "b", "c"]),
            "blob": st.binary(max_size=20),
            "ok": st.booleans(),
            "f": st.floats(width=32, allow_nan=False),
            "ts": st.integers(0, 2**62),
            "more": st.lists(inner, max_size=2),
        }
    )
)
nested = st.fixed_dictionaries(
    {
        "tags": st.lists(st.text(max_size=10), max_size=12),
        "attrs": st.dictionaries(st.text(max_size=5), st.none() | st.floats(), max_size=5),
        "kind": st.sampled_from(["a", "b", "c"]),
        "mac": st.binary(min_size=6, max_size=6),
        "next": st.none() | inner,
    }
)


@settings(max_examples=200, deadline=None)
@given(nested, st.data())
def test_the_limits_checker_passes_what_fastavro_writes_and_refuses_what_exceeds_a_limit(
    rec: dict[str, Any], data: st.DataObject
) -> None:
    from streamflow.codecs.flatavro import compile_checker

    encoded = encode(NESTED, rec)
    compile_checker(NESTED, max_string_length=40, max_array_length=12)(
        encoded
    )  # no false alarm (10 chars: <= 40 bytes)
    tight = compile_checker(NESTED, max_string_length=3, max_array_length=2)
    over = (
        any(len(t.encode()) > 3 for t in rec["tags"])
        or len(rec["tags"]) > 2
        or len(rec["attrs"]) > 2
        or any(len(k.encode()) > 3 for k in rec["attrs"])
    )
    if over:
        with pytest.raises(DecodeError, match="exceeds max_"):
            tight(encoded)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    try:
        fast(NESTED, encoded[:cut])
    except Exception:
        with pytest.raises(DecodeError):
            compile_checker(NESTED, max_string_length=40, max_array_length=12)(encoded[:cut])


def test_a_varint_past_64_bits_is_refused_not_wrapped() -> None:
    """fastavro keeps the low 64 bits of such a timestamp (33 here); the flat reader refuses it."""
    read = compile_reader(READING)
    assert read is not None
    tail = b"\x00" * (len(READING["fields"]) - 2)  # every nullable field null
    assert (
        read(b"\x02d" + b"\xc2" + b"\x80" * 8 + b"\x01" + tail)["timestamp"] == 2**62 + 33
    )  # 64 bits: fine
    with pytest.raises(DecodeError, match="varint larger than 64 bits"):
        read(b"\x02d" + b"\xc2" + b"\x80" * 8 + b"\x02" + tail)
