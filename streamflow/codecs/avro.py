"""Avro: schemas from ``schemas/``, schemaless records and the Confluent wire format (magic
byte 0 + 4-byte schema id + Avro) through confluent-kafka's schema-registry client.

Every read is bounded by the pipeline's ``[limits]``: ``flatavro.compile_checker`` walks the
bytes before fastavro allocates anything. An id the registry does not have is a bad record;
a registry that does not answer is an ``InfrastructureError`` (the stage stops, nothing is
dead-lettered for it).
"""

from __future__ import annotations

import io
import json
import struct
import time
from functools import lru_cache
from typing import Any, NoReturn

import fastavro

from streamflow.codecs.flatavro import Checker, compile_checker
from streamflow.errors import DecodeError, InfrastructureError
from streamflow.records import ReasonCode
from streamflow.settings import LimitSettings

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
        self.client = SchemaRegistryClient.new_client(
            {"url": url}
        )  # mock:// URLs give the built-in mock
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
            raise DecodeError(bad[0], ReasonCode.UNKNOWN_SCHEMA)
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            s = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise InfrastructureError(
                    f"schema registry {self.url}: schema id {schema_id}: {exc}", retriable=True
                ) from None
            self._refuse(schema_id, f"registry: unknown schema id {schema_id}")
        except Exception as exc:  # the registry does not answer: not the record's fault
            raise InfrastructureError(
                f"schema registry {self.url} did not answer for schema id {schema_id}: "
                f"{type(exc).__name__}: {exc}",
                retriable=True,
            ) from None
        if (s.schema_type or "AVRO") != "AVRO":
            self._refuse(
                schema_id, f"registry: schema id {schema_id} is a {s.schema_type} schema, not Avro"
            )
        try:
            raw = _strip_logical_types(json.loads(s.schema_str or "null"))
            parsed = fastavro.parse_schema(raw)
        except Exception as exc:  # JSONDecodeError, SchemaParseException, ...
            self._refuse(
                schema_id,
                f"registry: schema id {schema_id} is not a valid Avro schema "
                f"({type(exc).__name__}: {str(exc)[:80]})",
            )
        self._writers[schema_id] = (parsed, raw)
        return parsed, raw

    def checker(self, schema_id: int, limits: LimitSettings) -> Checker:
        """The limits check for records written with ``schema_id`` (known to ``writer``)."""
        key = (schema_id, limits)
        if key not in self._checkers:
            try:
                self._checkers[key] = _checker(self.writer(schema_id)[1], limits)
            except (
                KeyError,
                TypeError,
                ValueError,
                AttributeError,
            ) as exc:  # fastavro took it, we cannot
                self._refuse(
                    schema_id, f"registry: schema id {schema_id}: cannot check its limits ({exc})"
                )
        return self._checkers[key]

    def _refuse(self, schema_id: int, reason: str) -> NoReturn:
        if len(self._bad) >= self.UNKNOWN_MAX:
            self._bad.clear()
        self._bad[schema_id] = (reason, time.monotonic())
        raise DecodeError(reason, ReasonCode.UNKNOWN_SCHEMA)

    def register(self, subject: str, schema: str | dict[str, Any]) -> int:
        """The id of ``schema`` (an .avsc path, or the schema itself) under ``subject``."""
        if subject not in self._ids:
            from confluent_kafka.schema_registry import Schema

            text = json.dumps(_raw_schema(schema) if isinstance(schema, str) else schema)
            self._ids[subject] = int(self.client.register_schema(subject, Schema(text, "AVRO")))
        return self._ids[subject]


@lru_cache(maxsize=8)
def _registry_for(url: str) -> _Registry:
    """One registry client per URL and process, so its schema caches are shared."""
    return _Registry(url)


def _avro_read(
    data: bytes, writer: Any, reader: Any | None, check: Checker | None = None
) -> dict[str, Any]:
    if check is not None:
        check(data)  # the limits, before fastavro allocates anything
    buf = io.BytesIO(data)
    try:
        rec = (
            fastavro.schemaless_reader(buf, writer, reader)
            if reader is not None
            else fastavro.schemaless_reader(buf, writer)
        )
    except EOFError:
        raise DecodeError("avro: truncated record (EOF)", ReasonCode.INVALID_AVRO) from None
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"avro: string is not utf-8 ({exc.reason})", ReasonCode.INVALID_UTF8
        ) from None
    except (MemoryError, OverflowError):
        raise DecodeError(
            "avro: length prefix larger than the message", ReasonCode.INVALID_AVRO
        ) from None
    except Exception as exc:  # fastavro raises IndexError, ValueError, SchemaResolutionError, ...
        raise DecodeError(
            f"avro: cannot decode ({type(exc).__name__}: {str(exc)[:120]})", ReasonCode.INVALID_AVRO
        ) from None
    left = len(data) - buf.tell()
    if left:
        raise DecodeError(
            f"avro: {left} trailing bytes after the record (wrong schema?)", ReasonCode.INVALID_AVRO
        )
    if not isinstance(rec, dict):
        raise DecodeError("avro: not a record", ReasonCode.INVALID_AVRO)
    return rec


def _checker(raw_schema: Any, limits: LimitSettings) -> Checker:
    return compile_checker(
        raw_schema,
        max_string_length=limits.max_string_length,
        max_array_length=limits.max_array_length,
    )


class RecordCodec:
    """One record <-> bytes, for the CLI, the collectors and the tests."""

    def __init__(
        self,
        schema_path: str | dict[str, Any],
        *,
        format: str = "avro",
        schema_registry_url: str = "",
        topic: str = "",
        limits: LimitSettings | None = None,
    ) -> None:
        """``schema_path``: an .avsc file, or the schema itself (a generated result schema)."""
        self.schema_path = schema_path
        raw = _raw_schema(schema_path) if isinstance(schema_path, str) else schema_path
        self.schema = (
            load_schema(schema_path)
            if isinstance(schema_path, str)
            else fastavro.parse_schema(_strip_logical_types(schema_path))
        )
        self.format = format
        self.registry = _registry_for(schema_registry_url) if schema_registry_url else None
        self.subject = f"{topic}-value"
        self.limits = limits or LimitSettings()
        self._check = _checker(_strip_logical_types(raw), self.limits)

    def encode(self, record: dict[str, Any]) -> bytes:
        if self.format == "json":
            return json.dumps(record, separators=(",", ":")).encode()
        buf = io.BytesIO()
        if self.registry is not None:
            buf.write(
                struct.pack(
                    ">bI", WIRE_MAGIC, self.registry.register(self.subject, self.schema_path)
                )
            )
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        if not data:
            raise DecodeError("empty message", ReasonCode.EMPTY)
        if data.lstrip()[:1] == b"{":
            try:
                rec = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DecodeError(f"json: invalid JSON: {exc}", ReasonCode.INVALID_JSON) from None
            if not isinstance(rec, dict):
                raise DecodeError("json: top-level value is not an object", ReasonCode.INVALID_JSON)
            return rec
        if self.registry is not None:
            return _decode_wire(data, self.registry, self.schema, self.limits)
        return _avro_read(data, self.schema, None, self._check)


def _decode_wire(
    data: bytes, registry: _Registry, reader: Any, limits: LimitSettings
) -> dict[str, Any]:
    if len(data) < 5:
        raise DecodeError(
            f"registry: message of {len(data)} bytes is shorter than the 5-byte wire-format header",
            ReasonCode.UNKNOWN_SCHEMA,
        )
    if data[0] != WIRE_MAGIC:
        raise DecodeError(
            f"registry: magic byte {data[0]} is not 0 (not the Confluent wire format)",
            ReasonCode.UNKNOWN_SCHEMA,
        )
    schema_id = struct.unpack(">I", data[1:5])[0]
    writer = registry.writer_schema(schema_id)
    return _avro_read(data[5:], writer, reader, registry.checker(schema_id, limits))
