"""Raw input messages (Avro, wire format or JSON) -> feature columns, or a precise reason per
row."""

from __future__ import annotations

import json
import logging
import operator
import re
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamflow.codecs.avro import (
    VALUE_SCHEMA_ID_HEADER,
    WIRE_MAGIC,
    SchemaRegistry,
    _avro_read,
    _checker,
    _decode_wire,
    _field_types,
    _raw_schema,
    _strip_logical_types,
    load_schema,
)
from streamflow.codecs.flatavro import compile_reader
from streamflow.errors import DecodeError, InfrastructureError
from streamflow.records import ReasonCode
from streamflow.settings import LimitSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodedReadings:
    """A batch of decoded input records as columns; ``errors[i]`` is set where row i failed,
    ``codes[i]`` is its ``ReasonCode``."""

    values: np.ndarray  # float64[n, F]; NaN where missing or undecodable
    missing: np.ndarray  # bool[n, F]
    device_ids: list[str]
    event_ms: np.ndarray  # int64[n]
    errors: list[str | None]
    codes: list[ReasonCode | None]
    # the ``columns`` asked for (pass-through fields), as they were in the record (None: absent)
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    # a category value outside its vocabulary: (row, column) -> the value (its column holds -1)
    unknown: dict[tuple[int, int], str] = field(default_factory=dict)


_BOM = b"\xef\xbb\xbf"
_JSON_START = (b"{", b" ", b"\n", b"\t", b"\r", _BOM[:1])  # what a JSON object may start with
_JSON_OTHER = (
    b'["-0123456789tfnNI'  # ... and a JSON value that is not an object (NaN, Infinity too)
)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _json_type(v: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
    }.get(type(v), "a number")


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


# JSON nested deeper than this is refused before it is parsed. json's own limit is the
# interpreter's recursion limit less the stack already in use, so the same record could be
# refused in a batch and accepted alone (or under another caller): this bound is the same for
# every caller. A reading nests one or two levels; a nested field is refused anyway.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_OPENERS = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSERS = np.frombuffer(b"]}", dtype=np.uint8)


def too_deep(value: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value``'s brackets (outside strings) nest deeper than ``limit``. Two counts for
    an ordinary record; the scan only when it holds more brackets than the limit."""
    if value.count(b"[") + value.count(b"{") <= limit:
        return False
    codes = np.frombuffer(_JSON_STRING.sub(b"", value), dtype=np.uint8)
    step = np.isin(codes, _OPENERS).astype(np.int32) - np.isin(codes, _CLOSERS)
    return bool(len(step)) and int(np.cumsum(step).max()) > limit


def _json_loads(value: bytes) -> Any:
    if too_deep(value):
        raise DecodeError("json: nested too deeply", ReasonCode.INVALID_JSON)
    try:
        return json.loads(value)
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"json: not utf-8 ({exc.reason} at byte {exc.start})", ReasonCode.INVALID_UTF8
        ) from None
    except json.JSONDecodeError as exc:
        raise DecodeError(
            f"json: invalid JSON: {exc.msg} at char {exc.pos}", ReasonCode.INVALID_JSON
        ) from None
    except RecursionError:
        raise DecodeError("json: nested too deeply", ReasonCode.INVALID_JSON) from None
    except ValueError:  # Python refuses to parse integer literals this long (int_max_str_digits)
        raise DecodeError(
            f"json: invalid JSON: a number of more than {sys.get_int_max_str_digits()} digits",
            ReasonCode.INVALID_JSON,
        ) from None


class ReadingDecoder:
    """Decodes raw input messages (Avro, wire format or JSON) into feature columns."""

    def __init__(
        self,
        schema_path: str,
        feature_names: Sequence[str],
        *,
        format: str = "auto",
        key_field: str = "device_id",
        timestamp_field: str = "timestamp",
        registry: SchemaRegistry | None = None,
        limits: LimitSettings | None = None,
        kinds: Mapping[str, str] | None = None,
        vocabularies: Mapping[str, Sequence[str]] | None = None,
        columns: Sequence[str] = (),
    ) -> None:
        """``feature_names``: the fields read as numbers, unless ``kinds`` says otherwise for one:
        ``"bool"`` (true/false as 1/0), ``"category"`` (a string: its index in
        ``vocabularies[name]``, -1 when not in it) or ``"long"`` (an integer, epoch ms).
        ``columns``: fields carried along as they are (pass-through)."""
        self.schema = load_schema(schema_path)
        self.names = list(feature_names)
        kinds = dict(kinds or {})
        self._special = [
            (
                j,
                name,
                kinds[name],
                {v: float(i) for i, v in enumerate((vocabularies or {}).get(name, ()))},
            )
            for j, name in enumerate(self.names)
            if kinds.get(name, "number") != "number"
        ]
        self._numbers = [n for n in self.names if kinds.get(n, "number") == "number"]
        self.columns = list(columns)
        self._columns_of = (
            operator.itemgetter(*self.columns) if len(self.columns) > 1
            else (lambda r: (r[self.columns[0]],)) if self.columns else (lambda r: ())
        )  # fmt: skip
        self._row_of = (
            operator.itemgetter(*self.names)
            if len(self.names) > 1
            else (lambda r: [r[self.names[0]]])
        )
        self.format = format
        self.key_field, self.ts_field = key_field, timestamp_field
        self.registry = registry  # the Confluent wire format (avro.schema_registry(settings))
        self.limits = limits or LimitSettings()
        self.max_bytes = self.limits.max_message_bytes
        # JSON fields that must be strings when present (the key field is required as well).
        self.string_fields = [
            n for n, t in _field_types(schema_path).items() if t and t <= {"string", "null"}
        ]
        raw = _strip_logical_types(_raw_schema(schema_path))
        # Flat schemas (the telemetry one is) get a generated reader, ~3x faster than fastavro;
        # others are bounds-checked (the limits) before fastavro reads them.
        check = _checker(raw, self.limits)
        self._read_avro = compile_reader(raw, max_string_length=self.limits.max_string_length) or (
            lambda data: _avro_read(data, self.schema, None, check)
        )
        self._unexpected = 0

    def decode_one(
        self, value: bytes | None, key_bytes: int = 0, schema_header: bytes | None = None
    ) -> dict[str, Any]:
        """One message as a record dict; raises DecodeError with the reason.

        ``key_bytes``, the length of the message's key, counts towards max_message_bytes;
        ``schema_header``, its ``__value_schema_id`` header (registry only: the value is then
        plain Avro of that schema)."""
        if not value:
            raise DecodeError("empty message", ReasonCode.EMPTY)
        if len(value) + key_bytes > self.max_bytes:
            raise DecodeError(
                f"message of {len(value) + key_bytes} bytes exceeds max_message_bytes "
                f"{self.max_bytes}" + (f" (key {key_bytes} bytes)" if key_bytes else ""),
                ReasonCode.TOO_LARGE,
            )
        if self.format == "json":
            return self._json(value)
        if self.format == "auto" and value[:1] in _JSON_START and _is_object(value):
            try:
                return self._json(value)
            except DecodeError:
                # Avro can start like JSON too: a device_id of 16 bytes starting with "{" is
                # b" {...".
                try:
                    return self._avro(value, schema_header)
                except DecodeError:
                    pass
                raise
        try:
            return self._avro(value, schema_header)
        except DecodeError as exc:
            raise self._diagnose(value, exc) from None

    def _avro(self, value: bytes, schema_header: bytes | None = None) -> dict[str, Any]:
        if self.registry is not None:
            return _decode_wire(value, self.registry, self.schema, self.limits, schema_header)
        return self._read_avro(value)

    def _diagnose(self, value: bytes, exc: DecodeError) -> DecodeError:
        """A more precise reason for a message that is not valid Avro, if there is one."""
        head = value.lstrip()[:1]
        if self.format == "auto" and not head:
            return DecodeError("empty message (only whitespace)", ReasonCode.EMPTY)
        if self.format == "auto" and head in _JSON_OTHER:
            deep = DecodeError(
                f"json: top-level value is {_json_type([])} nested too deeply, not an object"
                if head == b"["
                else "json: nested too deeply",
                ReasonCode.INVALID_JSON,
            )
            if too_deep(value):
                return deep
            try:
                rec = json.loads(value)
            except RecursionError:
                return deep
            except (
                ValueError
            ):  # not JSON either (UnicodeDecodeError is one): the Avro reason stands
                return exc
            return DecodeError(
                f"json: top-level value is {_json_type(rec)}, not an object",
                ReasonCode.INVALID_JSON,
            )
        if self.registry is None and value[0] == WIRE_MAGIC and len(value) >= 5:
            schema_id = struct.unpack(">I", value[1:5])[0]
            return DecodeError(
                f"{exc.reason}; it starts like the Confluent wire format (magic byte 0, schema id "
                f"{schema_id}) but input.schema_registry_url is not set",
                exc.code,
            )
        return exc

    def _json(self, value: bytes) -> dict[str, Any]:
        rec = _json_loads(value)
        if not isinstance(rec, dict):
            raise DecodeError(
                f"json: top-level value is {_json_type(rec)}, not an object",
                ReasonCode.INVALID_JSON,
            )
        for name in (self.key_field, self.ts_field):
            if rec.get(name) is None:
                raise DecodeError(f"json: missing field {name}", ReasonCode.MISSING_FIELD)
        dev = rec[self.key_field]
        if not isinstance(dev, str):
            raise DecodeError(
                f"json: field {self.key_field}: expected a string, got {_preview(dev)}",
                ReasonCode.WRONG_TYPE,
            )
        try:
            dev.encode()
        except (
            UnicodeEncodeError
        ) as exc:  # "\ud800": valid JSON, but no UTF-8 (nor Kafka key) has it
            raise DecodeError(
                f"json: field {self.key_field}: not valid unicode (lone surrogate "
                f"{dev[exc.start]!r} at character {exc.start})",
                ReasonCode.INVALID_UTF8,
            ) from None
        for name in self.string_fields:
            v = rec.get(name)
            if v is None:
                continue
            if not isinstance(v, str):
                raise DecodeError(
                    f"json: field {name}: expected a string, got {_preview(v)}",
                    ReasonCode.WRONG_TYPE,
                )
            if len(v) > self.limits.max_string_length:
                raise DecodeError(
                    f"json: field {name}: string of {len(v)} characters exceeds max_string_length "
                    f"{self.limits.max_string_length}",
                    ReasonCode.TOO_LARGE,
                )
        ts = rec[self.ts_field]
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise DecodeError(
                f"json: field {self.ts_field}: expected an integer (epoch ms), got {_preview(ts)}",
                ReasonCode.WRONG_TYPE,
            )
        if not _INT64_MIN <= ts <= _INT64_MAX:
            raise DecodeError(
                f"json: field {self.ts_field}: {_preview(ts)} does not fit a 64-bit "
                "integer (epoch ms)",
                ReasonCode.INVALID_JSON,
            )
        for name in self._numbers:
            v = rec.get(name)
            if v is None or type(v) is float:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise DecodeError(
                    f"json: field {name}: expected a number, got {_preview(v)}",
                    ReasonCode.WRONG_TYPE,
                )
            try:
                float(v)
            except OverflowError:
                raise DecodeError(
                    f"json: field {name}: {_preview(v)} is too large for a number",
                    ReasonCode.INVALID_JSON,
                ) from None
        return rec

    def schema_headers(self, headers: Sequence[Any] | None, n: int) -> Sequence[bytes | None]:
        """Each message's ``__value_schema_id`` header value (None where it has none). Read only
        with a registry: without one a value is never read by a schema id."""
        if self.registry is None or headers is None:
            return (None,) * n
        return [
            next((v for k, v in h if k == VALUE_SCHEMA_ID_HEADER), None) if h else None
            for h in headers
        ]

    def decode_batch(
        self,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[Any] | None = None,
    ) -> DecodedReadings:
        """Every message as a row; a bad one gets its reason in ``errors`` (its key counts
        towards max_message_bytes when ``keys`` are given; ``headers``, each message's
        ``(key, value)`` pairs, may name its writer schema: ``schema_headers``)."""
        n, names = len(values), self.names
        row_of = self._row_of
        rows: list[list[Any]] = []
        extra: list[Any] = []  # the pass-through columns' values per row
        columns_of, no_columns = self._columns_of, (None,) * len(self.columns)
        device_ids: list[str] = []
        event_ms: list[int] = []
        errors: list[str | None] = []
        codes: list[ReasonCode | None] = []
        empty = [None] * len(names)
        key_bytes = [0] * n if keys is None else [len(k) if k else 0 for k in keys]
        dev: Any
        ts: Any
        schema_headers = self.schema_headers(headers, n)
        for value, kb, sh in zip(values, key_bytes, schema_headers, strict=True):
            try:
                rec = self.decode_one(value, kb, sh)
                dev, ts = rec.get(self.key_field), rec.get(self.ts_field)
                if not isinstance(dev, str) or not isinstance(ts, int):
                    name = self.key_field if not isinstance(dev, str) else self.ts_field
                    raise DecodeError(f"missing field {name}", ReasonCode.MISSING_FIELD)
            except DecodeError as exc:
                reason: str | None = exc.reason
                code: ReasonCode | None = exc.code
            except InfrastructureError:
                raise  # the registry does not answer: not this record's fault
            except Exception as exc:
                reason, code = self._bug(exc), ReasonCode.OTHER
            else:
                reason = code = None
            if reason is not None:
                rows.append(empty)
                extra.append(no_columns)
                device_ids.append("")
                event_ms.append(0)
                errors.append(reason)
                codes.append(code)
                continue
            try:
                rows.append(row_of(rec))  # every field present (Avro): one C call
            except KeyError:
                rows.append([rec.get(k) for k in names])  # JSON may leave optional ones out
            if self.columns:
                try:
                    extra.append(columns_of(rec))
                except KeyError:
                    extra.append(tuple(rec.get(k) for k in self.columns))
            device_ids.append(dev)
            event_ms.append(ts)
            errors.append(None)
            codes.append(None)
        if n == 0:
            return DecodedReadings(
                np.zeros((0, len(names))),
                np.zeros((0, len(names)), bool),
                [],
                np.zeros(0, np.int64),
                [],
                [],
            )
        arr = np.array(rows, dtype=object)
        missing = np.equal(arr, None)  # type: ignore[call-overload]  # numpy stubs lack object-None
        unknown = self._convert_special(arr, missing, errors, codes) if self._special else {}
        try:
            values_f = np.where(missing, np.nan, arr).astype(np.float64)
        except (
            TypeError,
            ValueError,
            OverflowError,
        ):  # a value that is no number (a schema left to fastavro)
            values_f = self._rows_to_float(arr, missing, errors, codes)
        try:
            ev = np.array(event_ms, dtype=np.int64)
        except OverflowError:
            ev = np.array([t if -(2**63) <= t < 2**63 else 0 for t in event_ms], dtype=np.int64)
        columns: dict[str, np.ndarray] = {}
        for j, name in enumerate(self.columns):
            col = np.empty(n, dtype=object)
            col[:] = [row[j] for row in extra]
            columns[name] = col
        return DecodedReadings(values_f, missing, device_ids, ev, errors, codes, columns, unknown)

    def _convert_special(
        self,
        arr: np.ndarray,
        missing: np.ndarray,
        errors: list[str | None],
        codes: list[ReasonCode | None],
    ) -> dict[tuple[int, int], str]:
        """Booleans, categories and epoch-ms fields as numbers in ``arr``, in place; a value of
        the wrong type gives its row an error (``WRONG_TYPE``). Returns the category values
        outside their vocabulary (their cell holds -1)."""
        unknown: dict[tuple[int, int], str] = {}
        for j, name, kind, vocab in self._special:
            col = arr[:, j]
            for i in np.flatnonzero(~missing[:, j]).tolist():
                v = col[i]
                if errors[i] is not None:
                    col[i] = None
                    continue
                if kind == "bool":
                    ok = isinstance(v, bool)
                    want = "true or false"
                elif kind == "category":
                    ok = isinstance(v, str)
                    want = "a string"
                    if ok:
                        index = vocab.get(v)
                        if index is None:
                            unknown[(i, j)] = v
                            index = -1.0
                        col[i] = index
                        continue
                else:  # long: epoch ms
                    ok = isinstance(v, int) and not isinstance(v, bool)
                    want = "an integer (epoch ms)"
                if not ok:
                    errors[i] = f"field {name}: expected {want}, got {_preview(v)}"
                    codes[i] = ReasonCode.WRONG_TYPE
                    col[i] = None
            missing[:, j] = np.equal(col, None)  # type: ignore[call-overload]
        return unknown

    def _rows_to_float(
        self,
        arr: np.ndarray,
        missing: np.ndarray,
        errors: list[str | None],
        codes: list[ReasonCode | None],
    ) -> np.ndarray:
        """The values as floats; a row with a value that is no number gets its error and code."""
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
                    codes[i] = ReasonCode.WRONG_TYPE
        return out

    def _bug(self, exc: Exception) -> str:
        """A decoder failure no check foresaw: the record is dead-lettered, the stage goes on, and
        the traceback is logged (the first few times) so the decoder can be fixed. Its code is
        ``ReasonCode.OTHER``."""
        self._unexpected += 1
        if self._unexpected <= 5:
            log.error("unexpected decoder failure (dead-lettered; please report)", exc_info=exc)
        return f"decode: internal error ({type(exc).__name__}: {str(exc)[:160]})"


def _is_object(value: bytes) -> bool:
    """Whether a message starts like a JSON object: '{' after whitespace and a UTF-8 byte-order
    mark."""
    return value.removeprefix(_BOM).lstrip()[:1] == b"{"
