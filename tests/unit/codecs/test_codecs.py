import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamflow.codecs import (
    ReadingDecoder,
    RecordCodec,
    ResultEncoder,
    decode_record_batch,
    encode_record_batch,
    encode_record_batches,
    record_batch_length,
    registry_for,
    to_json_line,
)
from streamflow.collectors.synthetic import MEASUREMENTS
from streamflow.errors import DecodeError
from streamflow.records import BytesColumn, RecordBatch

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
READING = str(SCHEMAS / "telemetry_reading.avsc")
RESULT = str(SCHEMAS / "scored_result.avsc")
SAMPLES = {
    "telemetry_reading.avsc": {
        "device_id": "rack1-node1",
        "timestamp": 1764000000000,
        **{m: float(i) for i, m in enumerate(MEASUREMENTS)},
        "status": "ok",
    },
    "scored_result.avsc": {
        "device_id": "rack1-node1",
        "timestamp": 1764000000000,
        "score": 0.25,
        "label": "normal",
        "model_name": "m",
        "model_version": "1",
        "latency_ms": 3.5,
    },
    "fleet_reading.avsc": {
        "host": "rack3-host17",
        "timestamp": 1764000000000,
        "rack": "rack3",
        "status": "ok",
        "hw_model": "poweredge-r750",
        "on_battery": False,
        "cpu_temp_c": 61.5,
        "inlet_temp_c": 22.0,
        "fan_rpm": 7200.0,
        "power_w": 410.0,
        "cpu_util_pct": 55.0,
        "mem_util_pct": None,
        "disk_latency_ms": 0.8,
    },
    "text_record.avsc": {
        "id": "t-1",
        "timestamp": 1764000000000,
        "source": "mail",
        "text": "Disk full 🔥 café",
    },
    "text_result.avsc": {
        "id": "t-1",
        "timestamp": 1764000000000,
        "embedding": [0.5, -0.25, 0.0],
        "label": "disk",
        "label_score": 0.75,
        "model_name": "m",
        "model_version": "1",
        "latency_ms": 3.5,
    },
}


def reading(**changes: object) -> dict:  # type: ignore[type-arg]
    rec = dict(SAMPLES["telemetry_reading.avsc"])
    rec.update(changes)
    return rec


@pytest.mark.parametrize("schema", sorted(p.name for p in SCHEMAS.glob("*.avsc")))
@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_every_schema_round_trips(schema: str, fmt: str) -> None:
    codec = RecordCodec(str(SCHEMAS / schema), format=fmt)
    assert codec.decode(codec.encode(SAMPLES[schema])) == SAMPLES[schema]


def test_decode_batch_gives_values_or_a_precise_reason_per_row() -> None:
    avro = RecordCodec(READING)
    good = avro.encode(reading(gpu_temp_c=None))
    values = [
        good,
        json.dumps(reading()).encode(),
        b'{"device_id": "d", "timestamp": 1, "cpu_temp_c": NaN}',
        b'{"device_id": "d", "timestamp": 1, "cpu_temp_c": "hot"}',
        b'{"device_id": "d", "timestamp": 1, "power_w": true}',
        b'{"timestamp": 1}',
        b"",
        None,
        good[: len(good) // 2],
        good + b"\x00\x00",
        b"{not json",
        b"x" * 2_000_000,
    ]
    dec = ReadingDecoder(READING, MEASUREMENTS).decode_batch(values)
    assert dec.errors[:3] == [None, None, None]
    assert dec.errors[3] == "json: field cpu_temp_c: expected a number, got str 'hot'"
    assert dec.errors[4] == "json: field power_w: expected a number, got bool True"
    assert dec.errors[5] == "json: missing field device_id"
    assert dec.errors[6] == dec.errors[7] == "empty message"
    assert dec.errors[8] == "avro: truncated record (EOF)"
    assert dec.errors[9] == "avro: 2 trailing bytes after the record (wrong schema?)"
    assert dec.errors[10].startswith("json: invalid JSON")
    assert dec.errors[11] == "message of 2000000 bytes exceeds max_message_bytes 1048576"
    assert dec.missing[0].tolist() == [name == "gpu_temp_c" for name in MEASUREMENTS]
    assert dec.values[1].tolist() == [float(i) for i in range(16)]
    assert (
        np.isnan(dec.values[2, 0]) and not dec.missing[2, 0]
    )  # NaN is a value, not a missing field
    assert dec.device_ids[:2] == ["rack1-node1", "rack1-node1"] and dec.event_ms[0] == 1764000000000


def test_wire_format_with_a_schema_registry() -> None:
    url = "mock://streamflow-test"
    codec = RecordCodec(READING, registry=registry_for(url), topic="raw")
    data = codec.encode(reading())
    assert data[0] == 0 and len(data) > 5
    dec = ReadingDecoder(READING, MEASUREMENTS, registry=registry_for(url))
    assert dec.decode_one(data)["device_id"] == "rack1-node1"
    with pytest.raises(DecodeError, match="registry: unknown schema id 4242"):
        dec.decode_one(b"\x00\x00\x00\x10\x92" + data[5:])
    with pytest.raises(DecodeError, match="registry: magic byte 7 is not 0"):
        dec.decode_one(b"\x07" + data[1:])


def test_result_encoder_matches_the_result_schema() -> None:
    enc = ResultEncoder.from_file(RESULT)
    out = enc.encode(
        {"device_id": ["a", "b"], "timestamp": [1, 2], "score": [0.1, 0.9],
         "label": ["normal", "anomaly"], "model_name": ["m"] * 2, "model_version": ["1"] * 2,
         "latency_ms": [2.0, 3.0]},
        2,
    )  # fmt: skip
    codec = RecordCodec(RESULT)
    assert [codec.decode(b)["label"] for b in out] == ["normal", "anomaly"]
    assert codec.decode(out[1])["score"] == 0.9


def batch(n: int) -> RecordBatch:
    return RecordBatch(
        "raw",
        3,
        np.arange(n, dtype=np.int64),
        np.arange(n, dtype=np.int64) * 2,
        BytesColumn.from_list([None if i % 3 == 0 else bytes([i % 256]) * i for i in range(n)]),
        BytesColumn.from_list([b"v" * i for i in range(n)]),
        BytesColumn.from_list([f"d{i}".encode() for i in range(n)]),
        np.arange(n, dtype=np.int64) + 7,
        np.random.default_rng(0).random((n, 16), dtype=np.float32),
        stage="normalize",
        extra={"k": "v"},
    )


def encode_sfb1(b: RecordBatch) -> bytes:
    """An internal batch as streamflow wrote them before named columns (SFB1: a fixed order)."""
    cols = [b.keys, b.values, b.device_ids] + ([b.texts] if b.texts is not None else [])
    arrays = [
        np.ascontiguousarray(a, t)
        for a, t in (
            (b.offsets, np.int64),
            (b.ingest_ms, np.int64),
            (b.event_ms, np.int64),
            (b.features, np.float32),
        )
    ]
    for col in cols:
        arrays += [
            np.ascontiguousarray(col.ends, np.int64),
            np.ascontiguousarray(col.null, np.bool_),
        ]
    blobs = [a.tobytes() for a in arrays] + [col.data for col in cols]
    header = json.dumps(
        {
            "t": b.source_topic,
            "p": b.source_partition,
            "s": b.stage,
            "n": len(b),
            "f": int(b.features.shape[1]),
            "x": b.extra,
            "l": [len(x) for x in blobs],
        }
    ).encode()
    return b"".join([b"SFB1", len(header).to_bytes(4, "big"), header, *blobs])


@pytest.mark.parametrize("encode", [encode_record_batch, encode_sfb1], ids=["sfb2", "sfb1"])
@pytest.mark.parametrize("n", [0, 1, 257])
def test_record_batches_round_trip_exactly(n: int, encode: Callable[[RecordBatch], bytes]) -> None:
    """Batches of today's format, and those written before named columns (SFB1), decode."""
    b = batch(n)
    data = encode(b)
    assert record_batch_length(data) == n
    got = decode_record_batch(data)
    assert (got.source_topic, got.source_partition, got.stage, got.extra) == (
        "raw",
        3,
        "normalize",
        {"k": "v"},
    )
    for name in ("offsets", "ingest_ms", "event_ms", "features"):
        np.testing.assert_array_equal(getattr(got, name), getattr(b, name))
    for name in ("keys", "values", "device_ids"):
        assert getattr(got, name).to_list() == getattr(b, name).to_list()
    assert got.texts is None


def test_large_batches_are_split_under_the_size_limit_in_order() -> None:
    b = batch(600)  # values grow with the row: ~180 kB of raw bytes alone
    whole = encode_record_batch(b)
    parts = encode_record_batches(b, 40_000)
    assert len(parts) > 1 and all(len(p) <= 40_000 for p in parts)
    got = [decode_record_batch(p) for p in parts]
    np.testing.assert_array_equal(np.concatenate([g.offsets for g in got]), b.offsets)
    assert sum((g.values.to_list() for g in got), []) == b.values.to_list()
    assert encode_record_batches(b, len(whole)) == [whole]
    assert encode_record_batches(batch(1), 10) == [
        encode_record_batch(batch(1))
    ]  # one row goes alone


def test_truncated_or_foreign_batches_are_decode_errors() -> None:
    data = encode_record_batch(batch(10))
    for bad in (data[:-1], data[:20], b"", b"SFB9" + data[4:], data + b"x"):
        with pytest.raises(DecodeError):
            decode_record_batch(bad)


def test_a_column_the_reader_does_not_know_is_carried_by_name_not_position() -> None:
    data = encode_record_batch(batch(3))
    hlen = int.from_bytes(data[4:8], "big")
    header = json.loads(data[8 : 8 + hlen])
    header["c"].reverse()  # the same columns in another order: found by name
    body, pos, blobs = data[8 + hlen :], 0, []
    for _, _, lengths, _ in json.loads(data[8 : 8 + hlen])["c"]:
        part = []
        for ln in lengths:
            part.append(body[pos : pos + ln])
            pos += ln
        blobs.append(b"".join(part))
    raw = json.dumps(header).encode()
    got = decode_record_batch(
        b"SFB2" + len(raw).to_bytes(4, "big") + raw + b"".join(reversed(blobs))
    )
    np.testing.assert_array_equal(got.features, batch(3).features)
    assert got.device_ids.to_list() == batch(3).device_ids.to_list()


def test_json_lines_are_strict_json() -> None:
    line = to_json_line({"a": float("nan"), "b": float("inf"), "c": 1.5, "d": b"\xff"})
    assert json.loads(line) == {"a": "nan", "b": "inf", "c": 1.5, "d": "\\xff"}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_bytes_never_raise_and_give_one_row_each(values: list[bytes]) -> None:
    dec = ReadingDecoder(READING, MEASUREMENTS).decode_batch(values)
    assert len(dec.errors) == len(values) == len(dec.device_ids) == dec.values.shape[0]
    for err in dec.errors:
        assert err is None or isinstance(err, str)


def test_registry_ids_that_are_not_avro_are_bad_records_but_a_silent_registry_is_not() -> None:
    from confluent_kafka.schema_registry import Schema

    from streamflow.errors import InfrastructureError

    url = "mock://streamflow-registry-errors"
    reg = registry_for(url)
    proto = reg.client.register_schema("p", Schema('syntax = "proto3"; message M {}', "PROTOBUF"))
    dec = ReadingDecoder(READING, MEASUREMENTS, registry=registry_for(url))
    body = RecordCodec(READING).encode(reading())
    with pytest.raises(
        DecodeError, match=f"registry: schema id {proto} is a PROTOBUF schema, not Avro"
    ):
        dec.decode_one(b"\x00" + proto.to_bytes(4, "big") + body)
    calls = []
    real = reg.client.get_schema

    def down(schema_id: int) -> object:
        calls.append(schema_id)
        raise ConnectionRefusedError("connection refused")

    reg.client.get_schema = down  # type: ignore[method-assign]
    try:
        with pytest.raises(InfrastructureError, match="did not answer for schema id 77") as e:
            dec.decode_batch(
                [b"\x00" + (77).to_bytes(4, "big") + body]
            )  # not dead-lettered: the stage stops
        assert e.value.retriable
    finally:
        reg.client.get_schema = real  # type: ignore[method-assign]

    def counted(schema_id: int) -> object:
        calls.append(schema_id)
        return real(schema_id)

    reg.client.get_schema = counted  # type: ignore[method-assign]
    try:
        for _ in range(3):  # an unknown id is asked for once, not once per record
            assert dec.decode_batch([b"\x00" + (4343).to_bytes(4, "big") + body]).errors == [
                "registry: unknown schema id 4343"
            ]
    finally:
        reg.client.get_schema = real  # type: ignore[method-assign]
    assert calls == [77, 4343]


def test_avro_that_starts_like_json_is_still_avro() -> None:
    """In the auto format a value starting with whitespace and '{' is tried as JSON first; an Avro
    record can look like that (a 16-byte device_id starting with '{' has the length byte ' ')."""
    rec = reading(device_id="{rack1-node1-abc", cpu_temp_c=float("nan"))
    data = RecordCodec(READING).encode(rec)
    assert data[:2] == b" {"
    dec = ReadingDecoder(READING, MEASUREMENTS).decode_batch([data, b" {not json"])
    assert dec.errors[0] is None and dec.device_ids[0] == "{rack1-node1-abc"
    assert dec.errors[1] is not None and dec.errors[1].startswith("json: invalid JSON")
    assert (
        ReadingDecoder(READING, MEASUREMENTS).decode_batch([b"Infinity", b"NaN"]).errors
        == ["json: top-level value is a number, not an object"] * 2
    )


@pytest.mark.parametrize("brackets", ["[]", "{}"])
def test_json_nesting_is_bounded_the_same_way_for_every_caller(brackets: str) -> None:
    """Deeper than MAX_JSON_DEPTH is refused before parsing, in a batch and alone alike (json's
    own limit moves with the stack in use); brackets inside strings do not count."""
    from streamflow.codecs.readings import MAX_JSON_DEPTH

    o, c = brackets

    def reading(depth: int) -> bytes:
        nest = (o if o == "[" else '{"a":') * depth + ("1" if o == "{" else "") + c * depth
        return (
            '{"device_id": "d", "timestamp": 1, "label": "' + "[" * 500 + '", '
            f'"{MEASUREMENTS[0]}": {nest}}}'
        ).encode()

    decoder = ReadingDecoder(READING, MEASUREMENTS)
    # the reading itself is one level: a field nested MAX_JSON_DEPTH - 1 deep is at the bound
    fits, deep = reading(MAX_JSON_DEPTH - 1), reading(MAX_JSON_DEPTH)
    never_closed = b'{"device_id": "d", "x": ' + o.encode() * 100_000
    errors = decoder.decode_batch([fits, deep, never_closed]).errors
    assert "nested too deeply" not in (errors[0] or "") and "expected a number" in (errors[0] or "")
    assert errors[1] == errors[2] == "json: nested too deeply"
    for value, error in zip([fits, deep, never_closed], errors, strict=True):
        with pytest.raises(DecodeError) as exc:
            decoder.decode_one(value)
        assert exc.value.reason == error
