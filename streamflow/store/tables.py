"""Result and dead-letter messages -> rows -> Arrow tables, for the store step.

A result's columns are its record's fields (the result schema: ``output.schema`` or the one the
pipeline declares), its source coordinates (the ``sf-source-*`` headers), and the Kafka
partition, offset and timestamp it was stored from. A dead letter's are its headers, key and
value. ``RowBuffer`` collects the rows of one open file.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fastavro

from streamflow.codecs import _strip_logical_types
from streamflow.errors import DecodeError
from streamflow.records import ReasonCode

# Columns every stored result carries besides its fields.
STORE_COLUMNS = (
    "sf_source_topic",
    "sf_source_partition",
    "sf_source_offset",
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp",
)
DEAD_LETTER_HEADERS = {  # header -> column
    "sf-stage": "stage",
    "sf-error-class": "error_class",
    "sf-reason-code": "reason_code",
    "sf-reason": "reason",
    "sf-source-topic": "sf_source_topic",
    "sf-source-partition": "sf_source_partition",
    "sf-source-offset": "sf_source_offset",
    "sf-ingest-ms": "ingest_ms",
}
INT_HEADERS = {"sf_source_partition", "sf_source_offset", "ingest_ms"}


def _header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> bytes | None:
    for k, v in headers or ():
        if k == name:
            return v
    return None


def _int(v: bytes | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def arrow_type(avro: Any) -> Any:
    """The Arrow type of an Avro field type (a nullable union: its non-null branch)."""
    import pyarrow as pa

    if isinstance(avro, list):
        rest = [t for t in avro if t != "null"]
        return arrow_type(rest[0]) if len(rest) == 1 else pa.string()
    if isinstance(avro, dict):
        if avro.get("logicalType") == "timestamp-millis":
            return pa.timestamp("ms", tz="UTC")
        if avro.get("type") == "array":
            return pa.list_(arrow_type(avro["items"]))
        return arrow_type(avro.get("type"))
    return {
        "string": pa.string(),
        "long": pa.int64(),
        "int": pa.int32(),
        "double": pa.float64(),
        "float": pa.float32(),
        "boolean": pa.bool_(),
        "bytes": pa.binary(),
    }.get(avro, pa.string())


@dataclass
class ResultDecoder:
    """Result messages as records, with the schema that wrote them: the pipeline's result schema
    (``schema``), a registry's writer schema (Confluent wire format), or JSON."""

    schema: dict[str, Any]  # the result schema (Avro JSON, logical types kept)
    format: str = "avro"
    registry: Any = None  # codecs.SchemaRegistry when results carry the wire format
    _parsed: Any = None
    _flat: Any = None
    _writers: dict[int, tuple[dict[str, Any], Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from streamflow.codecs.flatavro import compile_reader

        plain = _strip_logical_types(self.schema)
        self._parsed = fastavro.parse_schema(plain)
        self._flat = compile_reader(plain)  # the shipped result schemas are flat: ~3x fastavro

    def decode(self, value: bytes | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(record, the schema it was written with); raises DecodeError."""
        if not value:
            raise DecodeError("store: empty result", ReasonCode.EMPTY)
        if self.format == "json" or value[:1] == b"{":
            try:
                rec = json.loads(value)
            except (ValueError, UnicodeDecodeError) as exc:
                raise DecodeError(
                    f"store: result is not JSON: {exc}", ReasonCode.INVALID_JSON
                ) from None
            if not isinstance(rec, dict):
                raise DecodeError("store: result is no JSON object", ReasonCode.INVALID_JSON)
            return rec, self.schema
        schema, parsed, data = self.schema, self._parsed, value
        if self.registry is not None and value[:1] == b"\x00" and len(value) >= 5:
            schema_id = struct.unpack(">I", value[1:5])[0]
            if schema_id not in self._writers:
                parsed_writer, raw = self.registry.writer(schema_id)  # DecodeError: unknown id
                raw = json.loads(raw) if isinstance(raw, str) else raw
                self._writers[schema_id] = (raw, parsed_writer)
            schema, parsed = self._writers[schema_id]
            data = value[5:]
        if self._flat is not None and schema is self.schema:
            try:
                return self._flat(data), schema
            except DecodeError as exc:
                raise DecodeError(f"store: {exc.reason}", ReasonCode.INVALID_AVRO) from None
            except Exception as exc:
                raise DecodeError(
                    f"store: result is not Avro of its schema: {type(exc).__name__}: {exc}",
                    ReasonCode.INVALID_AVRO,
                ) from None
        try:
            buf = io.BytesIO(data)
            rec = fastavro.schemaless_reader(buf, parsed, None)
            if buf.tell() != len(data):
                raise ValueError(f"{len(data) - buf.tell()} bytes after the record")
        except Exception as exc:  # fastavro raises many types on bad bytes
            raise DecodeError(
                f"store: result is not Avro of its schema: {type(exc).__name__}: {exc}",
                ReasonCode.INVALID_AVRO,
            ) from None
        assert isinstance(rec, dict)
        return rec, schema


@dataclass
class RowBuffer:
    """The rows of one open file: one table, one partition, one hour, one schema. Rows come in
    as dicts and are sealed into Arrow record batches at the end of each chunk (``seal``), so
    an open file holds columns, not Python objects."""

    table: str
    topic: str
    partition: int
    folder: str  # date=.../hour=...
    schema: dict[str, Any] | None  # results: the record schema; dead letters: None
    opened_s: float  # wall clock, for rotate_schedule_interval_ms
    first_offset: int = -1
    last_offset: int = -1
    first_ms: int = 0  # record time of the first row
    rows: list[dict[str, Any]] = field(default_factory=list)  # not sealed yet
    batches: list[Any] = field(default_factory=list)  # pyarrow.RecordBatch
    count: int = 0
    bytes: int = 0
    _arrow: Any = None

    def add(self, row: dict[str, Any], offset: int, event_ms: int, size: int) -> None:
        if not self.count:
            self.first_offset, self.first_ms = offset, event_ms
        self.rows.append(row)
        self.count += 1
        self.last_offset = offset
        self.bytes += size

    def seal(self) -> None:
        """The rows added since the last seal as one Arrow record batch."""
        if not self.rows:
            return
        import pyarrow as pa

        if self._arrow is None:
            self._arrow = self.arrow_schema(self.rows)
        batch = pa.RecordBatch.from_pylist(self.rows, schema=self._arrow)
        self.batches.append(batch)
        self.rows = []

    def arrow_schema(self, sample: Sequence[Mapping[str, Any]]) -> Any:
        """The schema's fields, then the store's columns (an embedding: a fixed-size list when
        the first rows agree on its length; a later row of another length fails the file, and
        the file's rows are then written as variable lists)."""
        import pyarrow as pa

        if self.table == "dead_letters":
            return dead_letter_schema()
        fields = []
        assert self.schema is not None
        for f in self.schema.get("fields", []):
            t = arrow_type(f["type"])
            if pa.types.is_list(t):
                sizes = {len(r[f["name"]] or ()) for r in sample}
                if len(sizes) == 1 and sizes != {0}:
                    t = pa.list_(t.value_type, sizes.pop())
            fields.append(pa.field(f["name"], t))
        fields += [
            pa.field("sf_source_topic", pa.string()),
            pa.field("sf_source_partition", pa.int32()),
            pa.field("sf_source_offset", pa.int64()),
            pa.field("kafka_partition", pa.int32()),
            pa.field("kafka_offset", pa.int64()),
            pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC")),
        ]
        return pa.schema(fields)

    def to_table(self) -> Any:
        """Every row as one Arrow table."""
        import pyarrow as pa

        self.seal()
        return pa.Table.from_batches(self.batches, schema=self._arrow)

    def kafka_timestamps_ms(self) -> Any:
        """The rows' Kafka timestamps (epoch ms), for the store delay."""
        import numpy as np
        import pyarrow as pa

        self.seal()
        cols = [b.column("kafka_timestamp").cast(pa.int64()) for b in self.batches]
        return np.concatenate([c.to_numpy(zero_copy_only=False) for c in cols]) if cols else []

    def metadata(self) -> dict[str, str]:
        return {
            "topic": self.topic,
            "partition": str(self.partition),
            "first_offset": str(self.first_offset),
            "last_offset": str(self.last_offset),
            "rows": str(self.count),
            "schema": json.dumps(self.schema) if self.schema is not None else "",
        }


def dead_letter_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("stage", pa.string()),
            pa.field("error_class", pa.string()),
            pa.field("reason_code", pa.string()),
            pa.field("reason", pa.string()),
            pa.field("sf_source_topic", pa.string()),
            pa.field("sf_source_partition", pa.int32()),
            pa.field("sf_source_offset", pa.int64()),
            pa.field("ingest_ms", pa.timestamp("ms", tz="UTC")),
            pa.field("key", pa.binary()),
            pa.field("value", pa.binary()),
            pa.field("kafka_partition", pa.int32()),
            pa.field("kafka_offset", pa.int64()),
            pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC")),
        ]
    )


def result_row(record: Mapping[str, Any], msg: Any, partition: int) -> dict[str, Any]:
    """A stored result: its fields, its source coordinates, where it was read from."""
    row = dict(record)
    headers = msg.headers
    row["sf_source_topic"] = (_header(headers, "sf-source-topic") or b"").decode() or None
    row["sf_source_partition"] = _int(_header(headers, "sf-source-partition"))
    row["sf_source_offset"] = _int(_header(headers, "sf-source-offset"))
    row["kafka_partition"] = partition
    row["kafka_offset"] = msg.offset
    row["kafka_timestamp"] = msg.timestamp
    return row


def dead_letter_row(msg: Any, partition: int) -> tuple[dict[str, Any], int]:
    """A stored dead letter, and its time (``sf-ingest-ms``, else the message's)."""
    headers = msg.headers or ()
    row: dict[str, Any] = {}
    for name, col in DEAD_LETTER_HEADERS.items():
        v = _header(headers, name)
        if col in INT_HEADERS:
            row[col] = _int(v)
        else:
            row[col] = v.decode("utf-8", "replace") if v is not None else None
    row["key"], row["value"] = msg.key, msg.value
    row["kafka_partition"], row["kafka_offset"] = partition, msg.offset
    row["kafka_timestamp"] = msg.timestamp
    return row, row["ingest_ms"] if row["ingest_ms"] is not None else msg.timestamp
