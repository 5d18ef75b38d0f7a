"""Bytes <-> records: the only module that sees bytes.

- Avro with fastavro: schemaless bytes with the schema from ``schemas/``, or the Confluent
  wire format (magic byte 0 + 4-byte schema id + Avro) when a schema registry URL is set,
  through confluent-kafka's schema-registry client.
- JSON: one object per message, the same field names as the Avro schema.
- Columnar record batches for the internal topics (``SFB1``): a JSON header and raw
  numpy buffers, decoded zero-copy.

A bad record never raises out of ``decode_batch``: it gets a precise reason instead.
"""

from __future__ import annotations

import copy
import io
import json
import math
import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import fastavro
import numpy as np

from streamflow.errors import DecodeError
from streamflow.flatavro import compile_reader, compile_writer
from streamflow.records import BytesColumn, RecordBatch

MAGIC = b"SFB1"
WIRE_MAGIC = 0


def _strip_logical_types(schema: Any) -> Any:
    """The schema with logicalType removed, so timestamps read and write as plain epoch-ms ints."""
    if isinstance(schema, dict):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical_types(s) for s in schema]
    return schema


@lru_cache(maxsize=32)
def load_schema(path: str) -> Any:
    """The parsed schema of an .avsc file (timestamps as plain longs), cached by path."""
    with open(path) as f:
        raw = json.load(f)
    return fastavro.parse_schema(_strip_logical_types(raw))


@lru_cache(maxsize=32)
def _raw_schema(path: str) -> dict[str, Any]:
    with open(path) as f:
        return dict(json.load(f))


def _field_types(path: str) -> dict[str, set[str]]:
    def types(t: Any) -> set[str]:
        if isinstance(t, list):
            return set().union(*(types(x) for x in t))
        if isinstance(t, dict):
            return {str(t.get("type"))}
        return {str(t)}

    return {f["name"]: types(f["type"]) for f in _raw_schema(path)["fields"]}


class _Registry:
    """Schema ids <-> writer schemas through confluent-kafka's schema-registry client."""

    def __init__(self, url: str) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.client = SchemaRegistryClient.new_client({"url": url})  # mock:// URLs give the built-in mock
        self._writers: dict[int, Any] = {}
        self._ids: dict[str, int] = {}

    def writer_schema(self, schema_id: int) -> Any:
        if schema_id not in self._writers:
            try:
                s = self.client.get_schema(schema_id)
            except Exception as exc:  # SchemaRegistryError, or a transport error
                raise DecodeError(f"registry: unknown schema id {schema_id} ({exc})") from None
            self._writers[schema_id] = fastavro.parse_schema(_strip_logical_types(json.loads(s.schema_str or "null")))
        return self._writers[schema_id]

    def register(self, subject: str, schema_path: str) -> int:
        if subject not in self._ids:
            from confluent_kafka.schema_registry import Schema

            text = json.dumps(_raw_schema(schema_path))
            self._ids[subject] = int(self.client.register_schema(subject, Schema(text, "AVRO")))
        return self._ids[subject]


@lru_cache(maxsize=8)
def _registry_for(url: str) -> _Registry:
    """One registry client per URL and process, so its schema caches are shared."""
    return _Registry(url)


def _avro_read(data: bytes, writer: Any, reader: Any | None) -> dict[str, Any]:
    buf = io.BytesIO(data)
    try:
        rec = fastavro.schemaless_reader(buf, writer, reader) if reader is not None else \
            fastavro.schemaless_reader(buf, writer)
    except EOFError:
        raise DecodeError("avro: truncated record (EOF)") from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"avro: string is not utf-8 ({exc.reason})") from None
    except (MemoryError, OverflowError):
        raise DecodeError("avro: length prefix larger than the message") from None
    except Exception as exc:  # fastavro raises IndexError, ValueError, SchemaResolutionError, ...
        raise DecodeError(f"avro: cannot decode ({type(exc).__name__}: {str(exc)[:120]})") from None
    left = len(data) - buf.tell()
    if left:
        raise DecodeError(f"avro: {left} trailing bytes after the record (wrong schema?)")
    if not isinstance(rec, dict):
        raise DecodeError("avro: not a record")
    return rec


class RecordCodec:
    """One record <-> bytes, for the CLI, the collectors and the tests."""

    def __init__(self, schema_path: str, *, format: str = "avro", schema_registry_url: str = "",
                 topic: str = "") -> None:
        self.schema_path = schema_path
        self.schema = load_schema(schema_path)
        self.format = format
        self.registry = _registry_for(schema_registry_url) if schema_registry_url else None
        self.subject = f"{topic}-value"

    def encode(self, record: dict[str, Any]) -> bytes:
        if self.format == "json":
            return json.dumps(record, separators=(",", ":")).encode()
        buf = io.BytesIO()
        if self.registry is not None:
            buf.write(struct.pack(">bI", WIRE_MAGIC, self.registry.register(self.subject, self.schema_path)))
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        if not data:
            raise DecodeError("empty message")
        if data.lstrip()[:1] == b"{":
            try:
                rec = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DecodeError(f"json: invalid JSON: {exc}") from None
            if not isinstance(rec, dict):
                raise DecodeError("json: top-level value is not an object")
            return rec
        if self.registry is not None:
            return _decode_wire(data, self.registry, self.schema)
        return _avro_read(data, self.schema, None)


def _decode_wire(data: bytes, registry: _Registry, reader: Any) -> dict[str, Any]:
    if len(data) < 5:
        raise DecodeError(f"registry: message of {len(data)} bytes is shorter than the 5-byte wire-format header")
    if data[0] != WIRE_MAGIC:
        raise DecodeError(f"registry: magic byte {data[0]} is not 0 (not the Confluent wire format)")
    schema_id = struct.unpack(">I", data[1:5])[0]
    return _avro_read(data[5:], registry.writer_schema(schema_id), reader)


@dataclass(frozen=True)
class DecodedReadings:
    """A batch of decoded input records as columns; ``errors[i]`` is set where row i failed."""

    values: np.ndarray  # float64[n, F]; NaN where missing or undecodable
    missing: np.ndarray  # bool[n, F]
    device_ids: list[str]
    event_ms: np.ndarray  # int64[n]
    errors: list[str | None]


class ReadingDecoder:
    """Decodes raw input messages (Avro, wire format or JSON) into feature columns."""

    def __init__(self, schema_path: str, feature_names: Sequence[str], *, format: str = "auto",
                 key_field: str = "device_id", timestamp_field: str = "timestamp",
                 schema_registry_url: str = "", max_message_bytes: int = 1_048_576) -> None:
        self.schema = load_schema(schema_path)
        self.names = list(feature_names)
        self._row_of = operator.itemgetter(*self.names) if len(self.names) > 1 else (lambda r: [r[self.names[0]]])
        self.format = format
        self.key_field, self.ts_field = key_field, timestamp_field
        self.registry = _registry_for(schema_registry_url) if schema_registry_url else None
        self.max_bytes = max_message_bytes
        self.required_str = [n for n, t in _field_types(schema_path).items() if t == {"string"}]
        # Flat schemas (the telemetry one is) get a generated reader, ~3x faster than fastavro.
        self._read_avro = compile_reader(_strip_logical_types(_raw_schema(schema_path))) or \
            (lambda data: _avro_read(data, self.schema, None))

    def decode_one(self, value: bytes | None) -> dict[str, Any]:
        """One message as a record dict; raises DecodeError with the reason."""
        if not value:
            raise DecodeError("empty message")
        if len(value) > self.max_bytes:
            raise DecodeError(f"message of {len(value)} bytes exceeds max_message_bytes {self.max_bytes}")
        is_json = self.format == "json" or (self.format == "auto" and value[:1] in (b"{", b" ", b"\n", b"\t")
                                             and value.lstrip()[:1] == b"{")
        if is_json:
            return self._json(value)
        if self.format == "json":
            raise DecodeError("json: invalid JSON: not an object")
        if self.registry is not None:
            return _decode_wire(value, self.registry, self.schema)
        return self._read_avro(value)

    def _json(self, value: bytes) -> dict[str, Any]:
        try:
            rec = json.loads(value)
        except UnicodeDecodeError:
            raise DecodeError("json: not utf-8") from None
        except json.JSONDecodeError as exc:
            raise DecodeError(f"json: invalid JSON: {exc.msg} at char {exc.pos}") from None
        except RecursionError:
            raise DecodeError("json: nested too deeply") from None
        if not isinstance(rec, dict):
            raise DecodeError("json: top-level value is not an object")
        for name in (self.key_field, self.ts_field):
            if rec.get(name) is None:
                raise DecodeError(f"json: missing field {name}")
        dev = rec[self.key_field]
        if not isinstance(dev, str):
            raise DecodeError(f"json: field {self.key_field}: expected a string, got {type(dev).__name__} {dev!r:.40}")
        ts = rec[self.ts_field]
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise DecodeError(f"json: field {self.ts_field}: expected an integer (epoch ms), got "
                              f"{type(ts).__name__} {ts!r:.40}")
        for name in self.names:
            v = rec.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise DecodeError(f"json: field {name}: expected a number, got {type(v).__name__} {v!r:.40}")
        return rec

    def decode_batch(self, values: Sequence[bytes | None]) -> DecodedReadings:
        n, names = len(values), self.names
        row_of = self._row_of
        rows: list[list[Any]] = []
        device_ids: list[str] = []
        event_ms: list[int] = []
        errors: list[str | None] = []
        empty = [None] * len(names)
        for value in values:
            try:
                rec = self.decode_one(value)
                dev, ts = rec.get(self.key_field), rec.get(self.ts_field)
                if not isinstance(dev, str) or not isinstance(ts, int):
                    raise DecodeError(f"missing field {self.key_field if not isinstance(dev, str) else self.ts_field}")
            except DecodeError as exc:
                rows.append(empty)
                device_ids.append("")
                event_ms.append(0)
                errors.append(exc.reason)
                continue
            try:
                rows.append(row_of(rec))  # every field present (Avro): one C call
            except KeyError:
                rows.append([rec.get(k) for k in names])  # JSON may leave optional ones out
            device_ids.append(dev)
            event_ms.append(ts)
            errors.append(None)
        if n == 0:
            return DecodedReadings(np.zeros((0, len(names))), np.zeros((0, len(names)), bool), [],
                                   np.zeros(0, np.int64), [])
        arr = np.array(rows, dtype=object)
        missing = np.equal(arr, None)  # type: ignore[call-overload]  # numpy stubs lack object-None
        values_f = np.where(missing, np.nan, arr).astype(np.float64)
        try:
            ev = np.array(event_ms, dtype=np.int64)
        except OverflowError:
            ev = np.array([t if -(2**63) <= t < 2**63 else 0 for t in event_ms], dtype=np.int64)
        return DecodedReadings(values_f, missing, device_ids, ev, errors)


RESULT_FIELDS = ("device_id", "timestamp", "score", "label", "model_name", "model_version", "latency_ms")


class ResultEncoder:
    """Encodes scored results, one message per row."""

    def __init__(self, schema_path: str, *, format: str = "avro", schema_registry_url: str = "",
                 topic: str = "") -> None:
        self.codec = RecordCodec(schema_path, format=format, schema_registry_url=schema_registry_url, topic=topic)
        self.format = format
        self._prefix = b""
        if self.codec.registry is not None and format == "avro":
            self._prefix = struct.pack(">bI", WIRE_MAGIC, self.codec.registry.register(self.codec.subject, schema_path))
        # The shipped result schema is flat, in this field order: a generated writer (flatavro).
        raw = _strip_logical_types(_raw_schema(schema_path))
        in_order = [f.get("name") for f in raw.get("fields", [])] == list(RESULT_FIELDS)
        self._write = compile_writer(raw) if in_order else None

    def encode_batch(self, device_ids: Sequence[str], event_ms: np.ndarray, scores: np.ndarray,
                     labels: Sequence[str], model_name: str, model_version: str,
                     latency_ms: np.ndarray) -> list[bytes]:
        ts, sc, lat = np.asarray(event_ms).tolist(), np.asarray(scores, dtype=np.float64).tolist(), \
            np.asarray(latency_ms, dtype=np.float64).tolist()
        out: list[bytes] = []
        if self.format == "json":
            for d, t, s, lb, la in zip(device_ids, ts, sc, labels, lat, strict=True):
                out.append(json.dumps({"device_id": d, "timestamp": t, "score": s, "label": lb,
                                       "model_name": model_name, "model_version": model_version,
                                       "latency_ms": round(la, 3)}, separators=(",", ":")).encode())
            return out
        prefix = self._prefix
        if self._write is not None:
            w = self._write
            return [prefix + w(d, t, s, lb, model_name, model_version, la)
                    for d, t, s, lb, la in zip(device_ids, ts, sc, labels, lat, strict=True)]
        schema, write = self.codec.schema, fastavro.schemaless_writer
        rec: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
        for d, t, s, lb, la in zip(device_ids, ts, sc, labels, lat, strict=True):
            rec["device_id"], rec["timestamp"], rec["score"], rec["label"], rec["latency_ms"] = d, t, s, lb, la
            buf = io.BytesIO()
            buf.write(prefix)
            write(buf, schema, rec)
            out.append(buf.getvalue())
        return out


# ---- columnar record batches for the internal topics ---------------------------------------

_HEADER = struct.Struct(">4sI")  # magic, header length


def encode_record_batch(batch: RecordBatch) -> bytes:
    cols = [batch.keys, batch.values, batch.device_ids]
    arrays: list[np.ndarray] = [np.ascontiguousarray(batch.offsets, np.int64), np.ascontiguousarray(batch.ingest_ms, np.int64),
              np.ascontiguousarray(batch.event_ms, np.int64), np.ascontiguousarray(batch.features, np.float32)]
    for c in cols:
        arrays += [np.ascontiguousarray(c.ends, np.int64), np.ascontiguousarray(c.null, np.bool_)]
    blobs = [a.tobytes() for a in arrays] + [c.data for c in cols]
    header = json.dumps({
        "t": batch.source_topic, "p": batch.source_partition, "s": batch.stage, "n": len(batch),
        "f": int(batch.features.shape[1]) if batch.features.ndim == 2 else 0, "x": batch.extra,
        "l": [len(b) for b in blobs],
    }, separators=(",", ":")).encode()
    return b"".join([_HEADER.pack(MAGIC, len(header)), header, *blobs])


def _batch_header(data: bytes) -> tuple[dict[str, Any], int]:
    if not data or len(data) < _HEADER.size:
        raise DecodeError("record batch: too short")
    magic, hlen = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError(f"record batch: bad magic {magic!r}")
    end = _HEADER.size + hlen
    if end > len(data):
        raise DecodeError("record batch: truncated header")
    try:
        header = json.loads(data[_HEADER.size:end])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DecodeError("record batch: header is not JSON") from None
    return header, end


def encode_record_batches(batch: RecordBatch, max_bytes: int) -> list[bytes]:
    """``batch`` encoded as one message, or as several of at most ``max_bytes`` each when it is
    larger (a single row larger than that still goes out alone)."""
    data = encode_record_batch(batch)
    n = len(batch)
    if len(data) <= max_bytes or n <= 1:
        return [data]
    parts = min(n, -(-len(data) // max_bytes) + 1)  # one spare part: rows differ in size
    bounds = np.linspace(0, n, parts + 1).astype(np.int64)
    out: list[bytes] = []
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        if hi > lo:
            out += encode_record_batches(batch.select(np.arange(lo, hi)), max_bytes)
    return out


def record_batch_length(data: bytes) -> int:
    """Rows in an encoded batch, from its header alone."""
    return int(_batch_header(data)[0]["n"])


def decode_record_batch(data: bytes) -> RecordBatch:
    header, pos = _batch_header(data)
    try:
        n, f, lengths = int(header["n"]), int(header["f"]), [int(x) for x in header["l"]]
        view = memoryview(data)
        if len(lengths) != 13 or pos + sum(lengths) != len(data):
            raise DecodeError(f"record batch: {len(data) - pos} body bytes, header announces {sum(lengths)}")
        parts = []
        for ln in lengths:
            parts.append(view[pos:pos + ln])
            pos += ln
        i64 = [np.frombuffer(parts[i], dtype=np.int64) for i in range(3)]
        feats = np.frombuffer(parts[3], dtype=np.float32).reshape(n, f)
        cols = []
        for j in range(3):
            ends = np.frombuffer(parts[4 + 2 * j], dtype=np.int64)
            null = np.frombuffer(parts[5 + 2 * j], dtype=np.bool_)
            blob = bytes(parts[10 + j])
            if len(ends) != n or len(null) != n or (n and int(ends[-1]) != len(blob)):
                raise DecodeError("record batch: inconsistent column lengths")
            cols.append(BytesColumn(blob, ends, null))
        if any(len(a) != n for a in i64):
            raise DecodeError("record batch: inconsistent column lengths")
        return RecordBatch(source_topic=str(header["t"]), source_partition=int(header["p"]), offsets=i64[0],
                           ingest_ms=i64[1], event_ms=i64[2], keys=cols[0], values=cols[1], device_ids=cols[2],
                           features=feats, stage=str(header["s"]), extra=dict(header.get("x") or {}))
    except DecodeError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"record batch: malformed ({type(exc).__name__}: {exc})") from None


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # "nan", "inf": JSON has no literal for them
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


def to_json_line(record: dict[str, Any]) -> str:
    """One line of strict JSON; non-finite floats become the strings "nan", "inf", "-inf"."""
    return json.dumps(_json_safe(copy.copy(record)), separators=(", ", ": "), allow_nan=False)
