"""Bytes <-> records: the only module that sees bytes.

- Avro with fastavro: schemaless bytes with the schema from ``schemas/``, or the Confluent
  wire format (magic byte 0 + 4-byte schema id + Avro) when a schema registry URL is set,
  through confluent-kafka's schema-registry client.
- JSON: one object per message, the same field names as the Avro schema.
- Columnar record batches for the internal topics (``SFB1``): a JSON header and raw
  numpy buffers, decoded zero-copy.

A bad record never raises out of ``decode_batch``: it gets a precise reason instead, and
no record makes it allocate more than the pipeline's ``[limits]`` allow (a length prefix is
checked before anything is read for it). Only a fault around the records (the schema
registry does not answer) raises, as an ``InfrastructureError``.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import operator
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NoReturn

import fastavro
import numpy as np

from streamflow.errors import DecodeError, InfrastructureError
from streamflow.flatavro import Checker, compile_checker, compile_reader, compile_writer
from streamflow.records import BytesColumn, RecordBatch
from streamflow.settings import LimitSettings

log = logging.getLogger(__name__)

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

    UNKNOWN_TTL_S = 30.0  # an id the registry did not know is asked again after this long
    UNKNOWN_MAX = 10_000

    def __init__(self, url: str) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.url = url
        self.client = SchemaRegistryClient.new_client({"url": url})  # mock:// URLs give the built-in mock
        self._writers: dict[int, tuple[Any, Any]] = {}
        self._ids: dict[str, int] = {}
        # Ids that are no Avro schema of this registry, with the reason and when it was found:
        # a flood of records with made-up ids costs one registry request per id, not per record.
        self._bad: dict[int, tuple[str, float]] = {}
        self._checkers: dict[tuple[int, LimitSettings], Checker] = {}

    def writer_schema(self, schema_id: int) -> Any:
        """The parsed writer schema of ``schema_id``."""
        return self.writer(schema_id)[0]

    def writer(self, schema_id: int) -> tuple[Any, Any]:
        """(parsed, JSON form) of the writer schema of ``schema_id``; DecodeError if the registry
        has no Avro schema under that id, InfrastructureError if it does not answer."""
        if schema_id in self._writers:
            return self._writers[schema_id]
        bad = self._bad.get(schema_id)
        if bad is not None and time.monotonic() - bad[1] < self.UNKNOWN_TTL_S:
            raise DecodeError(bad[0])
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            s = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise InfrastructureError(f"schema registry {self.url}: schema id {schema_id}: {exc}",
                                          retriable=True) from None
            self._refuse(schema_id, f"registry: unknown schema id {schema_id}")
        except Exception as exc:  # the registry does not answer: not the record's fault
            raise InfrastructureError(f"schema registry {self.url} did not answer for schema id {schema_id}: "
                                      f"{type(exc).__name__}: {exc}", retriable=True) from None
        if (s.schema_type or "AVRO") != "AVRO":
            self._refuse(schema_id, f"registry: schema id {schema_id} is a {s.schema_type} schema, not Avro")
        try:
            raw = _strip_logical_types(json.loads(s.schema_str or "null"))
            parsed = fastavro.parse_schema(raw)
        except Exception as exc:  # JSONDecodeError, SchemaParseException, ...
            self._refuse(schema_id, f"registry: schema id {schema_id} is not a valid Avro schema "
                                    f"({type(exc).__name__}: {str(exc)[:80]})")
        self._writers[schema_id] = (parsed, raw)
        return parsed, raw

    def checker(self, schema_id: int, limits: LimitSettings) -> Checker:
        """The limits check for records written with ``schema_id`` (known to ``writer``)."""
        key = (schema_id, limits)
        if key not in self._checkers:
            try:
                self._checkers[key] = _checker(self.writer(schema_id)[1], limits)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:  # fastavro took it, we cannot
                self._refuse(schema_id, f"registry: schema id {schema_id}: cannot check its limits ({exc})")
        return self._checkers[key]

    def _refuse(self, schema_id: int, reason: str) -> NoReturn:
        if len(self._bad) >= self.UNKNOWN_MAX:
            self._bad.clear()
        self._bad[schema_id] = (reason, time.monotonic())
        raise DecodeError(reason)

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


def _avro_read(data: bytes, writer: Any, reader: Any | None, check: Checker | None = None) -> dict[str, Any]:
    if check is not None:
        check(data)  # the limits, before fastavro allocates anything
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


def _checker(raw_schema: Any, limits: LimitSettings) -> Checker:
    return compile_checker(raw_schema, max_string_length=limits.max_string_length,
                           max_array_length=limits.max_array_length)


class RecordCodec:
    """One record <-> bytes, for the CLI, the collectors and the tests."""

    def __init__(self, schema_path: str, *, format: str = "avro", schema_registry_url: str = "",
                 topic: str = "", limits: LimitSettings | None = None) -> None:
        self.schema_path = schema_path
        self.schema = load_schema(schema_path)
        self.format = format
        self.registry = _registry_for(schema_registry_url) if schema_registry_url else None
        self.subject = f"{topic}-value"
        self.limits = limits or LimitSettings()
        self._check = _checker(_strip_logical_types(_raw_schema(schema_path)), self.limits)

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
            return _decode_wire(data, self.registry, self.schema, self.limits)
        return _avro_read(data, self.schema, None, self._check)


def _decode_wire(data: bytes, registry: _Registry, reader: Any, limits: LimitSettings) -> dict[str, Any]:
    if len(data) < 5:
        raise DecodeError(f"registry: message of {len(data)} bytes is shorter than the 5-byte wire-format header")
    if data[0] != WIRE_MAGIC:
        raise DecodeError(f"registry: magic byte {data[0]} is not 0 (not the Confluent wire format)")
    schema_id = struct.unpack(">I", data[1:5])[0]
    writer = registry.writer_schema(schema_id)
    return _avro_read(data[5:], writer, reader, registry.checker(schema_id, limits))


@dataclass(frozen=True)
class DecodedReadings:
    """A batch of decoded input records as columns; ``errors[i]`` is set where row i failed."""

    values: np.ndarray  # float64[n, F]; NaN where missing or undecodable
    missing: np.ndarray  # bool[n, F]
    device_ids: list[str]
    event_ms: np.ndarray  # int64[n]
    errors: list[str | None]


_BOM = b"\xef\xbb\xbf"
_JSON_START = (b"{", b" ", b"\n", b"\t", b"\r", _BOM[:1])  # what a JSON object may start with
_JSON_OTHER = b'["-0123456789tfn'  # ... and a JSON value that is not an object
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number")


def _preview(v: Any) -> str:
    """A short description of a JSON value for a reason. Never the repr of a container (a deeply
    nested one overflows the stack) or of a whole long string or number."""
    if isinstance(v, dict | list):
        return f"{type(v).__name__} of {len(v)} {'keys' if isinstance(v, dict) else 'items'}"
    if isinstance(v, str):
        return f"str {v[:40]!r:.40}"
    if isinstance(v, int) and not isinstance(v, bool) and not -(10**30) < v < 10**30:
        return f"int of {len(str(abs(v)))} digits"
    return f"{type(v).__name__} {v!r:.40}"


def _json_loads(value: bytes) -> Any:
    try:
        return json.loads(value)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"json: not utf-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DecodeError(f"json: invalid JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:
        raise DecodeError("json: nested too deeply") from None
    except ValueError:  # Python refuses to parse integer literals this long (int_max_str_digits)
        raise DecodeError(f"json: invalid JSON: a number of more than {sys.get_int_max_str_digits()} digits") from None


class ReadingDecoder:
    """Decodes raw input messages (Avro, wire format or JSON) into feature columns."""

    def __init__(self, schema_path: str, feature_names: Sequence[str], *, format: str = "auto",
                 key_field: str = "device_id", timestamp_field: str = "timestamp",
                 schema_registry_url: str = "", limits: LimitSettings | None = None) -> None:
        self.schema = load_schema(schema_path)
        self.names = list(feature_names)
        self._row_of = operator.itemgetter(*self.names) if len(self.names) > 1 else (lambda r: [r[self.names[0]]])
        self.format = format
        self.key_field, self.ts_field = key_field, timestamp_field
        self.registry = _registry_for(schema_registry_url) if schema_registry_url else None
        self.limits = limits or LimitSettings()
        self.max_bytes = self.limits.max_message_bytes
        # JSON fields that must be strings when present (the key field is required as well).
        self.string_fields = [n for n, t in _field_types(schema_path).items() if t and t <= {"string", "null"}]
        raw = _strip_logical_types(_raw_schema(schema_path))
        # Flat schemas (the telemetry one is) get a generated reader, ~3x faster than fastavro;
        # others are bounds-checked (the limits) before fastavro reads them.
        check = _checker(raw, self.limits)
        self._read_avro = compile_reader(raw, max_string_length=self.limits.max_string_length) or \
            (lambda data: _avro_read(data, self.schema, None, check))
        self._unexpected = 0

    def decode_one(self, value: bytes | None, key_bytes: int = 0) -> dict[str, Any]:
        """One message as a record dict; raises DecodeError with the reason.

        ``key_bytes``, the length of the message's key, counts towards max_message_bytes."""
        if not value:
            raise DecodeError("empty message")
        if len(value) + key_bytes > self.max_bytes:
            raise DecodeError(f"message of {len(value) + key_bytes} bytes exceeds max_message_bytes {self.max_bytes}"
                              + (f" (key {key_bytes} bytes)" if key_bytes else ""))
        if self.format == "json" or (self.format == "auto" and value[:1] in _JSON_START and _is_object(value)):
            return self._json(value)
        try:
            if self.registry is not None:
                return _decode_wire(value, self.registry, self.schema, self.limits)
            return self._read_avro(value)
        except DecodeError as exc:
            raise self._diagnose(value, exc) from None

    def _diagnose(self, value: bytes, exc: DecodeError) -> DecodeError:
        """A more precise reason for a message that is not valid Avro, if there is one."""
        head = value.lstrip()[:1]
        if self.format == "auto" and not head:
            return DecodeError("empty message (only whitespace)")
        if self.format == "auto" and head in _JSON_OTHER:
            try:
                rec = json.loads(value)
            except RecursionError:
                return DecodeError(f"json: top-level value is {_json_type([])} nested too deeply, not an object"
                                   if head == b"[" else "json: nested too deeply")
            except ValueError:  # not JSON either (UnicodeDecodeError is one): the Avro reason stands
                return exc
            return DecodeError(f"json: top-level value is {_json_type(rec)}, not an object")
        if self.registry is None and value[0] == WIRE_MAGIC and len(value) >= 5:
            schema_id = struct.unpack(">I", value[1:5])[0]
            return DecodeError(f"{exc.reason}; it starts like the Confluent wire format (magic byte 0, schema id "
                               f"{schema_id}) but input.schema_registry_url is not set")
        return exc

    def _json(self, value: bytes) -> dict[str, Any]:
        rec = _json_loads(value)
        if not isinstance(rec, dict):
            raise DecodeError(f"json: top-level value is {_json_type(rec)}, not an object")
        for name in (self.key_field, self.ts_field):
            if rec.get(name) is None:
                raise DecodeError(f"json: missing field {name}")
        dev = rec[self.key_field]
        if not isinstance(dev, str):
            raise DecodeError(f"json: field {self.key_field}: expected a string, got {_preview(dev)}")
        try:
            dev.encode()
        except UnicodeEncodeError as exc:  # "\ud800": valid JSON, but no UTF-8 (nor Kafka key) has it
            raise DecodeError(f"json: field {self.key_field}: not valid unicode (lone surrogate "
                              f"{dev[exc.start]!r} at character {exc.start})") from None
        for name in self.string_fields:
            v = rec.get(name)
            if v is None:
                continue
            if not isinstance(v, str):
                raise DecodeError(f"json: field {name}: expected a string, got {_preview(v)}")
            if len(v) > self.limits.max_string_length:
                raise DecodeError(f"json: field {name}: string of {len(v)} characters exceeds max_string_length "
                                  f"{self.limits.max_string_length}")
        ts = rec[self.ts_field]
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise DecodeError(f"json: field {self.ts_field}: expected an integer (epoch ms), got {_preview(ts)}")
        if not _INT64_MIN <= ts <= _INT64_MAX:
            raise DecodeError(f"json: field {self.ts_field}: {_preview(ts)} does not fit a 64-bit integer (epoch ms)")
        for name in self.names:
            v = rec.get(name)
            if v is None or type(v) is float:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise DecodeError(f"json: field {name}: expected a number, got {_preview(v)}")
            try:
                float(v)
            except OverflowError:
                raise DecodeError(f"json: field {name}: {_preview(v)} is too large for a number") from None
        return rec

    def decode_batch(self, values: Sequence[bytes | None], keys: Sequence[bytes | None] | None = None) -> DecodedReadings:
        """Every message as a row; a bad one gets its reason in ``errors`` (its key counts
        towards max_message_bytes when ``keys`` are given)."""
        n, names = len(values), self.names
        row_of = self._row_of
        rows: list[list[Any]] = []
        device_ids: list[str] = []
        event_ms: list[int] = []
        errors: list[str | None] = []
        empty = [None] * len(names)
        key_bytes = [0] * n if keys is None else [len(k) if k else 0 for k in keys]
        dev: Any
        ts: Any
        for value, kb in zip(values, key_bytes, strict=True):
            try:
                rec = self.decode_one(value, kb)
                dev, ts = rec.get(self.key_field), rec.get(self.ts_field)
                if not isinstance(dev, str) or not isinstance(ts, int):
                    raise DecodeError(f"missing field {self.key_field if not isinstance(dev, str) else self.ts_field}")
            except DecodeError as exc:
                reason: str | None = exc.reason
            except InfrastructureError:
                raise  # the registry does not answer: not this record's fault
            except Exception as exc:
                reason = self._bug(exc)
            else:
                reason = None
            if reason is not None:
                rows.append(empty)
                device_ids.append("")
                event_ms.append(0)
                errors.append(reason)
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
        try:
            values_f = np.where(missing, np.nan, arr).astype(np.float64)
        except (TypeError, ValueError, OverflowError):  # a value that is no number (a schema left to fastavro)
            values_f = self._rows_to_float(arr, missing, errors)
        try:
            ev = np.array(event_ms, dtype=np.int64)
        except OverflowError:
            ev = np.array([t if -(2**63) <= t < 2**63 else 0 for t in event_ms], dtype=np.int64)
        return DecodedReadings(values_f, missing, device_ids, ev, errors)

    def _rows_to_float(self, arr: np.ndarray, missing: np.ndarray, errors: list[str | None]) -> np.ndarray:
        out = np.full(arr.shape, np.nan)
        for i in range(arr.shape[0]):
            for j, name in enumerate(self.names):
                v = arr[i, j]
                if missing[i, j] or errors[i] is not None:
                    continue
                try:
                    if isinstance(v, bool | str | bytes):
                        raise TypeError
                    out[i, j] = float(v)
                except (TypeError, ValueError, OverflowError):
                    errors[i] = f"field {name}: expected a number, got {_preview(v)}"
        return out

    def _bug(self, exc: Exception) -> str:
        """A decoder failure no check foresaw: the record is dead-lettered, the stage goes on, and
        the traceback is logged (the first few times) so the decoder can be fixed."""
        self._unexpected += 1
        if self._unexpected <= 5:
            log.error("unexpected decoder failure (dead-lettered; please report)", exc_info=exc)
        return f"decode: internal error ({type(exc).__name__}: {str(exc)[:160]})"


def _is_object(value: bytes) -> bool:
    """Whether a message starts like a JSON object: '{' after whitespace and a UTF-8 byte-order mark."""
    return value.removeprefix(_BOM).lstrip()[:1] == b"{"




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
