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
import urllib.parse
import uuid
from functools import lru_cache
from typing import Any, NoReturn

import fastavro

from streamflow.codecs.flatavro import Checker, compile_checker
from streamflow.errors import ConfigError, DecodeError, InfrastructureError, StreamflowError
from streamflow.records import ReasonCode
from streamflow.settings import LimitSettings, SchemaRegistrySettings, Settings
from streamflow.settings.files import missing_files

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


# Newer confluent-kafka serializers (schema.id.serializer = header_schema_id_serializer) carry
# the writer schema's reference in this header instead of a prefix: magic byte 1 + the
# schema's 16-byte GUID (or magic byte 0 + the 4-byte id), and the value is plain Avro.
VALUE_SCHEMA_ID_HEADER = "__value_schema_id"
# SchemaRegistryClient properties that [schema_registry] sets by name (refused in its client table)
_REGISTRY_OWN = {
    "url": "input.schema_registry_url",
    "basic.auth.user.info": "schema_registry.username and password",
    "basic.auth.credentials.source": "schema_registry.username and password",
    "bearer.auth.token": "schema_registry.bearer_token",
    "bearer.auth.logical.cluster": "schema_registry.logical_cluster",
    "bearer.auth.identity.pool.id": "schema_registry.identity_pool_id",
    "ssl.ca.location": "schema_registry.ssl_cafile",
    "ssl.certificate.location": "schema_registry.ssl_certfile",
    "ssl.key.location": "schema_registry.ssl_keyfile",
    "timeout": "schema_registry.timeout_s",
}
SchemaRef = int | str  # a registry's schema id, or a schema GUID


def registry_client_config(url: str, r: SchemaRegistrySettings) -> dict[str, Any]:
    """confluent-kafka's SchemaRegistryClient configuration for ``url`` and [schema_registry]."""
    conf: dict[str, Any] = {"url": url, "timeout": r.timeout_s}
    if r.username:
        conf["basic.auth.user.info"] = f"{r.username}:{r.password.reveal()}"
    if r.bearer_token:
        conf["bearer.auth.credentials.source"] = "STATIC_TOKEN"
        conf["bearer.auth.token"] = r.bearer_token.reveal()
        conf["bearer.auth.logical.cluster"] = r.logical_cluster
        if r.identity_pool_id:
            conf["bearer.auth.identity.pool.id"] = r.identity_pool_id
    for key, prop in (
        ("ssl_cafile", "ssl.ca.location"),
        ("ssl_certfile", "ssl.certificate.location"),
        ("ssl_keyfile", "ssl.key.location"),
    ):
        if getattr(r, key):
            conf[prop] = getattr(r, key)
    return conf | dict(r.client)


def registry_problems(url: str, r: SchemaRegistrySettings) -> list[str]:
    """What is wrong with [schema_registry], naming the key (no secret's value)."""
    p = [
        f"schema_registry.client.{name}: set {_REGISTRY_OWN[name]} instead"
        for name in r.client
        if name in _REGISTRY_OWN
    ]
    if bool(r.username) != bool(r.password):
        p.append("schema_registry.username: HTTP Basic needs both username and password")
    if r.username and r.bearer_token:
        p.append("schema_registry.bearer_token: set either a bearer token or username/password")
    if r.ssl_keyfile and not r.ssl_certfile:
        p.append(
            "schema_registry.ssl_keyfile: needs schema_registry.ssl_certfile (the client "
            "certificate it belongs to)"
        )
    p += missing_files("schema_registry", r, ("ssl_cafile", "ssl_certfile", "ssl_keyfile"))
    if not r.timeout_s > 0:
        p.append(f"schema_registry.timeout_s: must be > 0, got {r.timeout_s}")
    configured = r.username or r.bearer_token or r.ssl_certfile or r.ssl_cafile or r.client
    if configured and not url:
        p.append("schema_registry: is configured but input.schema_registry_url is not set")
    return p


def _shown(url: str) -> str:
    """``url`` for messages: a password in it (http://user:pass@host) masked."""
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:********@{parts.hostname}" + (
            f":{parts.port}" if parts.port else ""
        )
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


class SchemaRegistry:
    """Schema ids <-> writer schemas through confluent-kafka's schema-registry client."""

    UNKNOWN_TTL_S = 30.0  # an id the registry did not know is asked again after this long
    UNKNOWN_MAX = 10_000

    def __init__(self, conf: dict[str, Any]) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.url = _shown(conf["url"])
        self.client = SchemaRegistryClient.new_client(conf)  # mock:// URLs give the built-in mock
        self._writers: dict[SchemaRef, tuple[Any, Any]] = {}
        self._ids: dict[str, int] = {}
        # Ids that are no Avro schema of this registry, with the reason and when it was found:
        # a flood of records with made-up ids costs one registry request per id, not per record.
        self._bad: dict[SchemaRef, tuple[str, float]] = {}
        self._checkers: dict[tuple[SchemaRef, LimitSettings], Checker] = {}

    def writer_schema(self, schema_id: SchemaRef) -> Any:
        """The parsed writer schema of ``schema_id`` (an id, or a GUID)."""
        return self.writer(schema_id)[0]

    def writer(self, schema_id: SchemaRef) -> tuple[Any, Any]:
        """(parsed, JSON form) of the writer schema of ``schema_id`` (an id, or a GUID);
        DecodeError if the registry has no Avro schema under it, InfrastructureError if it does
        not answer."""
        if schema_id in self._writers:
            return self._writers[schema_id]
        bad = self._bad.get(schema_id)
        if bad is not None and time.monotonic() - bad[1] < self.UNKNOWN_TTL_S:
            raise DecodeError(bad[0], ReasonCode.UNKNOWN_SCHEMA)
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            if isinstance(schema_id, str):
                s = self.client.get_schema_by_guid(schema_id)
            else:
                s = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise self._failure(exc, f"schema id {schema_id}") from None
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

    def checker(self, schema_id: SchemaRef, limits: LimitSettings) -> Checker:
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

    def _refuse(self, schema_id: SchemaRef, reason: str) -> NoReturn:
        if len(self._bad) >= self.UNKNOWN_MAX:
            self._bad.clear()
        self._bad[schema_id] = (reason, time.monotonic())
        raise DecodeError(reason, ReasonCode.UNKNOWN_SCHEMA)

    def register(self, subject: str, schema: str | dict[str, Any]) -> int:
        """The id of ``schema`` (an .avsc path, or the schema itself) under ``subject``."""
        if subject not in self._ids:
            from confluent_kafka.schema_registry import Schema
            from confluent_kafka.schema_registry.error import SchemaRegistryError

            text = json.dumps(_raw_schema(schema) if isinstance(schema, str) else schema)
            try:
                schema_id = self.client.register_schema(subject, Schema(text, "AVRO"))
            except SchemaRegistryError as exc:
                raise self._failure(exc, f"registering {subject}") from None
            except Exception as exc:  # it does not answer, or TLS fails
                raise InfrastructureError(
                    f"schema registry {self.url} did not answer registering {subject}: "
                    f"{type(exc).__name__}: {exc}",
                    retriable=True,
                ) from None
            self._ids[subject] = int(schema_id)
        return self._ids[subject]

    def _failure(self, exc: Any, what: str) -> StreamflowError:
        """The error for a registry's refusal: credentials refused (401, 403) are a
        configuration to fix, naming the keys; anything else may pass (retriable)."""
        status = exc.http_status_code
        if status in (401, 403):
            return ConfigError(
                f"schema registry {self.url}: {what}: HTTP {status} "
                f"({exc.error_message}): check schema_registry.username and password, or "
                "bearer_token"
            )
        return InfrastructureError(f"schema registry {self.url}: {what}: {exc}", retriable=True)


_REGISTRIES: dict[str, SchemaRegistry] = {}


def registry_for(url: str, settings: SchemaRegistrySettings | None = None) -> SchemaRegistry | None:
    """The registry client for ``url`` and [schema_registry] (None without a URL): one per
    configuration and process, so its schema caches are shared."""
    if not url:
        return None
    conf = registry_client_config(url, settings or SchemaRegistrySettings())
    key = json.dumps(conf, sort_keys=True, default=str)
    if key not in _REGISTRIES:
        _REGISTRIES[key] = SchemaRegistry(conf)
    return _REGISTRIES[key]


def schema_registry(settings: Settings) -> SchemaRegistry | None:
    """The pipeline's registry client (``input.schema_registry_url``, [schema_registry])."""
    return registry_for(settings.input.schema_registry_url, settings.schema_registry)


def header_schema_ref(value: bytes) -> SchemaRef:
    """The schema reference in a ``__value_schema_id`` header: a GUID (magic byte 1) or an id
    (magic byte 0); DecodeError when it is neither."""
    if len(value) >= 17 and value[0] == 1:
        return str(uuid.UUID(bytes=bytes(value[1:17])))
    if len(value) >= 5 and value[0] == WIRE_MAGIC:
        return int(struct.unpack(">I", value[1:5])[0])
    raise DecodeError(
        f"registry: the {VALUE_SCHEMA_ID_HEADER} header ({len(value)} bytes) holds no schema id "
        "(magic byte 0 + id, or 1 + GUID)",
        ReasonCode.UNKNOWN_SCHEMA,
    )


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
        registry: SchemaRegistry | None = None,
        topic: str = "",
        limits: LimitSettings | None = None,
    ) -> None:
        """``schema_path``: an .avsc file, or the schema itself (a generated result schema);
        ``registry``: the Confluent wire format through it (``schema_registry(settings)``)."""
        self.schema_path = schema_path
        raw = _raw_schema(schema_path) if isinstance(schema_path, str) else schema_path
        self.schema = (
            load_schema(schema_path)
            if isinstance(schema_path, str)
            else fastavro.parse_schema(_strip_logical_types(schema_path))
        )
        self.format = format
        self.registry = registry
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
    data: bytes,
    registry: SchemaRegistry,
    reader: Any,
    limits: LimitSettings,
    header: bytes | None = None,
) -> dict[str, Any]:
    """A registry-encoded value: the schema id in its 5-byte prefix, or, when the message has a
    ``__value_schema_id`` header (``header``), there, and the whole value is Avro."""
    if header is not None:
        ref = header_schema_ref(header)
        return _avro_read(data, registry.writer_schema(ref), reader, registry.checker(ref, limits))
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
